//! Turning logits into the next token: greedy, temperature, top-k, top-p, with a per-request seed.

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

/// Samples tokens for one sequence with its own random stream.
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

    /// Picks the next token from `logits` under `params`.
    pub fn sample(&mut self, logits: &[f32], params: &SamplingParams) -> u32 {
        if params.temperature <= 0.0 || params.top_k == 1 {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / params.temperature))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if params.top_k > 0 {
            candidates.truncate(params.top_k);
        }
        let max = candidates.first().map_or(0.0, |c| c.1);
        let mut total = 0.0f64;
        for c in candidates.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1 as f64;
        }
        if params.top_p < 1.0 {
            let mut cumulative = 0.0f64;
            let mut keep = candidates.len();
            for (i, c) in candidates.iter().enumerate() {
                cumulative += c.1 as f64 / total;
                if cumulative >= params.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep);
            total = candidates.iter().map(|c| c.1 as f64).sum();
        }
        let mut target = self.rng.random::<f64>() * total;
        for &(id, weight) in &candidates {
            target -= weight as f64;
            if target <= 0.0 {
                return id;
            }
        }
        candidates.last().map_or(0, |c| c.0)
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

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = Sampler::new(Some(1));
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &params(0.0, 1.0, 0, 1)), 1);
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
    fn top_k_and_top_p_restrict_candidates() {
        let logits = [5.0, 4.9, 0.0, -1.0, -2.0];
        let mut s = Sampler::new(Some(7));
        for _ in 0..200 {
            assert!(s.sample(&logits, &params(1.0, 1.0, 2, 7)) < 2);
            // The two top tokens carry over 0.9 of the mass, so top_p 0.9 keeps only them.
            assert!(s.sample(&logits, &params(1.0, 0.9, 0, 7)) < 2);
        }
    }
}
