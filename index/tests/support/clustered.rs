//! Seeded generator of clustered unit vectors, a stand-in for sentence embeddings (which
//! cluster by topic) shared by the recall test and the benchmark.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Points drawn around fixed random centroids with Gaussian noise, normalised.
pub struct Clustered {
    rng: StdRng,
    centroids: Vec<Vec<f32>>,
    noise: f32,
}

impl Clustered {
    /// `noise` is the standard deviation per component, relative to a unit centroid.
    pub fn new(seed: u64, n_centroids: usize, dim: usize, noise: f32) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let centroids = (0..n_centroids)
            .map(|_| normalize((0..dim).map(|_| gaussian(&mut rng)).collect()))
            .collect();
        Self {
            rng,
            centroids,
            noise,
        }
    }

    /// A new point near a random centroid.
    pub fn point(&mut self) -> Vec<f32> {
        let c = self.rng.random_range(0..self.centroids.len());
        let noisy = self.centroids[c]
            .iter()
            .map(|x| x + self.noise * gaussian(&mut self.rng))
            .collect::<Vec<f32>>();
        normalize(noisy)
    }

    pub fn points(&mut self, n: usize) -> Vec<Vec<f32>> {
        (0..n).map(|_| self.point()).collect()
    }
}

/// A standard normal sample by the Box-Muller transform.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn normalize(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// Indices of the `k` vectors most similar to `query`, by exhaustive scan.
pub fn brute_force_top_k(data: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.iter().zip(query).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored.into_iter().map(|(i, _)| i).collect()
}
