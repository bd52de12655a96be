//! Turning logits into the next token: greedy, temperature, top-k, top-p, with a per-request seed.
//!
//! One algorithm for every backend, so that the GPU can sample where the logits are and
//! only token ids cross to the host. A row is sampled as follows:
//!
//! 1. Greedy (`temperature <= 0` or `top_k == 1`): the first largest logit.
//! 2. Top-k: keep the tokens whose logit is at least the k-th largest (ties with the
//!    k-th are kept too, so the set never depends on an arbitrary order).
//! 3. Weights `w = exp((logit - max) / temperature)` of the kept tokens, summed in fixed
//!    point (`w · 2³²` truncated to an integer), so that the sum is exact and the same
//!    in any order of addition — a GPU reduction gives the host's result bit for bit.
//! 4. Top-p: keep the tokens whose logit is at least the smallest threshold `t` for which
//!    the kept tokens with logit `>= t` carry at least `top_p` of that sum (the smallest
//!    set of most likely tokens reaching `top_p`, ties again kept together).
//! 5. Draw: the kept token with the largest `(logit - max) / temperature + g`, where
//!    `g = -ln(-ln u)` is Gumbel noise and `u` a uniform number hashed from the row's
//!    64-bit key and the token's index (the Gumbel-max trick: token `i` wins with
//!    probability `w_i / Σw`, and every token's noise is independent of the others').
//!
//! Each request draws one key per sampled token from its own seeded stream
//! ([`Sampler`]), so a seed reproduces the whole output on any backend, and the draw
//! needs no sort and no prefix sum: one pass over the row once the thresholds are known.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The sampling and stopping parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability adds up to at least this (1 = off).
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Seed for reproducible sampling; a random one is drawn when absent.
    pub seed: Option<u64>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            max_tokens: 16,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Whether the next token is simply the most likely one.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// How one row of logits becomes a token: what a backend's sampling kernel takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSampling {
    pub temperature: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 1 = off.
    pub top_p: f32,
    /// Hashed with each token's index into that token's random number.
    pub key: u64,
}

/// `u32`s per row in [`RowSampling::pack`]'s layout.
pub const PACKED_ROW_LEN: usize = 5;

impl RowSampling {
    /// The most likely token.
    pub const GREEDY: RowSampling = RowSampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        key: 0,
    };

    pub fn is_greedy(&self) -> bool {
        // A NaN temperature is taken as greedy too.
        self.temperature.is_nan() || self.temperature <= 0.0 || self.top_k == 1
    }

    /// Appends the row in the layout the CUDA kernel reads: temperature and top-p as f32
    /// bits, top-k, then the key's low and high halves.
    pub fn pack(&self, out: &mut Vec<u32>) {
        out.extend_from_slice(&[
            self.temperature.to_bits(),
            self.top_k,
            self.top_p.to_bits(),
            self.key as u32,
            (self.key >> 32) as u32,
        ]);
    }
}

/// A request's stream of sampling keys, seeded from its `seed`.
#[derive(Debug)]
pub struct Sampler {
    rng: StdRng,
}

impl Sampler {
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self { rng }
    }

    /// The row parameters of the request's next token. Every token takes one key from
    /// the stream, greedy or not, so the n-th token's key depends only on the seed and n.
    pub fn next_row(&mut self, params: &SamplingParams) -> RowSampling {
        let key = self.rng.random::<u64>();
        if params.is_greedy() {
            return RowSampling {
                key,
                ..RowSampling::GREEDY
            };
        }
        RowSampling {
            temperature: params.temperature,
            top_k: u32::try_from(params.top_k).unwrap_or(u32::MAX),
            top_p: params.top_p,
            key,
        }
    }

    /// Picks the next token from `logits` under `params` on the host.
    pub fn sample(&mut self, logits: &[f32], params: &SamplingParams) -> u32 {
        sample_row(logits, &self.next_row(params))
    }
}

/// Index of the largest logit; the first one on ties, as numpy's argmax.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A `u32` that orders as the float does (NaN lowest), for thresholds found by radix select.
pub fn order_key(x: f32) -> u32 {
    if x.is_nan() {
        return 0;
    }
    let bits = x.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The uniform number in (0, 1) of token `index` under `key` (splitmix64's finaliser
/// over the key and the index; 24 bits, so it is exact in f32 on every device).
pub fn uniform(key: u64, index: u32) -> f32 {
    let mut z = key ^ (u64::from(index).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// A weight in (0, 1] as the fixed-point integer the top-p sums are taken in.
fn fixed_weight(w: f32) -> u64 {
    (w * 4_294_967_296.0) as u64
}

/// The kept-set thresholds of a non-greedy row: tokens with `order_key(logit) >= the
/// returned key` are candidates; also returns the largest logit.
fn thresholds(logits: &[f32], row: &RowSampling) -> (u32, f32) {
    let mut keys: Vec<u32> = logits.iter().map(|&l| order_key(l)).collect();
    let max_key = keys.iter().copied().max().unwrap_or(0);
    let max = logits
        .iter()
        .copied()
        .find(|&l| order_key(l) == max_key)
        .unwrap_or(0.0);
    let k = row.top_k as usize;
    let mut threshold = 0u32;
    if k > 0 && k < keys.len() {
        // The k-th largest key.
        let (_, kth, _) = keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        threshold = *kth;
    }
    if row.top_p < 1.0 {
        let inv_t = 1.0 / row.temperature;
        let mut kept: Vec<(u32, u64)> = logits
            .iter()
            .filter(|&&l| order_key(l) >= threshold)
            .map(|&l| (order_key(l), fixed_weight(((l - max) * inv_t).exp())))
            .collect();
        let total: u64 = kept.iter().map(|k| k.1).sum();
        let target = ((f64::from(row.top_p) * total as f64).ceil() as u64).max(1);
        kept.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
        let mut mass = 0u64;
        for &(key, weight) in &kept {
            mass += weight;
            if mass >= target {
                threshold = threshold.max(key);
                break;
            }
        }
    }
    (threshold, max)
}

/// Samples one row of logits on the host: the reference the GPU kernel must agree with.
pub fn sample_row(logits: &[f32], row: &RowSampling) -> u32 {
    if row.is_greedy() || logits.is_empty() {
        return argmax(logits);
    }
    let (threshold, max) = thresholds(logits, row);
    let inv_t = 1.0 / row.temperature;
    let mut best = (f32::NEG_INFINITY, u32::MAX);
    for (i, &l) in logits.iter().enumerate() {
        if order_key(l) < threshold {
            continue;
        }
        let i = i as u32;
        let gumbel = -(-uniform(row.key, i).ln()).ln();
        let score = (l - max) * inv_t + gumbel;
        if score > best.0 || best.1 == u32::MAX {
            best = (score, i);
        }
    }
    if best.1 == u32::MAX {
        argmax(logits)
    } else {
        best.1
    }
}

/// The probability of each token under `row`'s rule (what [`sample_row`] draws from):
/// for the statistical checks of a backend's sampler.
pub fn probabilities(logits: &[f32], row: &RowSampling) -> Vec<f64> {
    let mut p = vec![0.0; logits.len()];
    if row.is_greedy() {
        if !logits.is_empty() {
            p[argmax(logits) as usize] = 1.0;
        }
        return p;
    }
    let (threshold, max) = thresholds(logits, row);
    let inv_t = 1.0 / f64::from(row.temperature);
    for (pi, &l) in p.iter_mut().zip(logits) {
        if order_key(l) >= threshold {
            *pi = ((f64::from(l) - f64::from(max)) * inv_t).exp();
        }
    }
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|pi| *pi /= total);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    fn row(temperature: f32, top_k: u32, top_p: f32, key: u64) -> RowSampling {
        RowSampling {
            temperature,
            top_k,
            top_p,
            key,
        }
    }

    /// Empirical frequencies of `n` draws with keys 0..n.
    fn frequencies(logits: &[f32], template: RowSampling, n: u64) -> Vec<f64> {
        let mut counts = vec![0.0; logits.len()];
        for key in 0..n {
            counts[sample_row(logits, &RowSampling { key, ..template }) as usize] += 1.0;
        }
        counts.iter().map(|c| c / n as f64).collect()
    }

    fn total_variation(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / 2.0
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = Sampler::new(Some(1));
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &params(0.0, 1.0, 0, 1)), 1);
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &params(1.5, 1.0, 1, 1)), 1);
    }

    #[test]
    fn same_seed_gives_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = params(1.0, 1.0, 0, 42);
        let draw = |seed| {
            let mut s = Sampler::new(Some(seed));
            (0..20).map(|_| s.sample(&logits, &p)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn every_token_takes_one_key_greedy_or_not() {
        // The n-th key depends on the seed and n only, not on earlier tokens' parameters.
        let mut a = Sampler::new(Some(9));
        let mut b = Sampler::new(Some(9));
        a.next_row(&params(0.0, 1.0, 0, 9));
        b.next_row(&params(0.7, 0.9, 40, 9));
        assert_eq!(
            a.next_row(&params(1.0, 1.0, 0, 9)).key,
            b.next_row(&params(1.0, 1.0, 0, 9)).key
        );
    }

    #[test]
    fn top_k_and_top_p_restrict_candidates() {
        let logits = [5.0, 4.9, 0.0, -1.0, -2.0];
        for key in 0..500 {
            assert!(sample_row(&logits, &row(1.0, 2, 1.0, key)) < 2);
            // The two top tokens carry over 0.9 of the mass, so top_p 0.9 keeps only them.
            assert!(sample_row(&logits, &row(1.0, 0, 0.9, key)) < 2);
            // top_p below the top token's share keeps it alone.
            assert_eq!(sample_row(&logits, &row(1.0, 0, 0.3, key)), 0);
        }
    }

    #[test]
    fn ties_at_the_top_k_boundary_are_kept_together() {
        let logits = [1.0, 3.0, 2.0, 2.0, 0.0];
        let p = probabilities(&logits, &row(1.0, 2, 1.0, 0));
        assert!(p[1] > 0.0 && p[2] > 0.0 && p[3] > 0.0);
        assert_eq!((p[0], p[4]), (0.0, 0.0));
    }

    #[test]
    fn draws_follow_the_softmax_of_the_kept_tokens() {
        let logits: Vec<f32> = (0..12).map(|i| ((i * 7 % 12) as f32) * 0.3).collect();
        for template in [
            row(1.0, 0, 1.0, 0),
            row(0.5, 0, 1.0, 0),
            row(1.3, 5, 1.0, 0),
            row(0.8, 0, 0.7, 0),
            row(1.0, 6, 0.8, 0),
        ] {
            let want = probabilities(&logits, &template);
            let got = frequencies(&logits, template, 40_000);
            // 40,000 draws over 12 outcomes: the expected TV distance is about 0.008.
            let tv = total_variation(&want, &got);
            assert!(tv < 0.02, "{template:?}: tv {tv}");
            for (w, g) in want.iter().zip(&got) {
                if *w == 0.0 {
                    assert_eq!(*g, 0.0, "{template:?} drew a token outside its set");
                }
            }
        }
    }

    #[test]
    fn order_keys_sort_as_floats() {
        let values = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(order_key(pair[0]) <= order_key(pair[1]), "{pair:?}");
        }
        assert!(order_key(f32::NAN) < order_key(f32::NEG_INFINITY));
    }

    #[test]
    fn uniforms_are_open_and_differ_by_key_and_index() {
        let u: Vec<f32> = (0..1000).map(|i| uniform(7, i)).collect();
        assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
        let mean = u.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        assert_ne!(uniform(7, 3), uniform(8, 3));
    }

    #[test]
    fn rows_pack_in_the_kernel_layout() {
        let mut out = Vec::new();
        row(0.5, 40, 0.9, 0x1122_3344_5566_7788).pack(&mut out);
        assert_eq!(out.len(), PACKED_ROW_LEN);
        assert_eq!(
            out,
            vec![
                0.5f32.to_bits(),
                40,
                0.9f32.to_bits(),
                0x5566_7788,
                0x1122_3344
            ]
        );
        let greedy = Sampler::new(Some(1)).next_row(&params(0.0, 1.0, 0, 1));
        assert!(greedy.is_greedy());
    }
}
