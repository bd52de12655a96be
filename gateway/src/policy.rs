//! The policy in force: the validated config with what the gateway derives from it at load
//! time — the categories' embedding prototypes, their thresholds (chosen from calibration data
//! for categories with an error budget) and their index quotas.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cachet_embedder::Embedder;
use cachet_index::{EvictionPolicy, IndexParams, Quota, VectorIndex};
use cachet_policies::{
    Calibrated, CalibrationPoint, Category, Config, Eviction, LoadState, OperatingPoint,
    Prototypes, Threshold, calibrate,
};

#[derive(Debug, Clone)]
pub struct Policy {
    pub config: Arc<Config>,
    pub prototypes: Prototypes,
    /// Labelled calibration scores (empty without them).
    pub calibration: Arc<Vec<CalibrationPoint>>,
    points: HashMap<String, CategoryPoints>,
}

/// Where one category serves, normally and under load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CategoryPoints {
    pub normal: Operating,
    pub relaxed: Operating,
    /// How many times shadow checks halved the category's budget since the policy was loaded.
    pub tightened: u32,
}

/// An operating point with what calibration says of it (categories with a budget only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Operating {
    pub point: OperatingPoint,
    pub calibrated: Option<Calibrated>,
    /// The budget it was chosen for, when it was.
    pub budget: Option<f64>,
}

/// A point that serves no semantic candidate: the budget cannot be met.
const SERVE_NOTHING: OperatingPoint = OperatingPoint {
    threshold: Threshold::MAX,
    cutoff: 1.0,
};

/// Why a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to embed the examples of category {category}")]
    Examples {
        category: String,
        #[source]
        source: cachet_embedder::Error,
    },
    #[error("failed to read calibration data {path}")]
    ReadCalibration {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a calibration row (similarity, passed 0..1, trap 0/1, group)")]
    CalibrationRow { path: PathBuf, line: usize },
}

impl Policy {
    /// Embeds every category's example queries to build its prototype, and chooses the
    /// operating points of categories with an error budget from the calibration data.
    pub async fn build(config: Arc<Config>, embedder: &Embedder) -> Result<Self, PolicyError> {
        let mut vectors = Vec::new();
        for category in &config.categories {
            if category.examples.is_empty() {
                continue;
            }
            // Sent together, so that the embedder's micro-batching runs them as one batch.
            let embedded = futures::future::try_join_all(
                category
                    .examples
                    .iter()
                    .map(|example| embedder.embed(example)),
            )
            .await
            .map_err(|source| PolicyError::Examples {
                category: category.name.clone(),
                source,
            })?;
            vectors.push((category.name.clone(), embedded));
        }
        let prototypes = Prototypes::new(&config, vectors);
        let calibration = match &config.calibration.file {
            Some(path) => read_calibration(path)?,
            None => Vec::new(),
        };
        let mut policy = Self {
            config,
            prototypes,
            calibration: Arc::new(calibration),
            points: HashMap::new(),
        };
        let names: Vec<String> = policy
            .config
            .categories
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            policy.place(&name, 0);
        }
        Ok(policy)
    }

    /// The operating point a category serves with in the given load state.
    pub fn operating_point(&self, category: &str, state: LoadState) -> OperatingPoint {
        self.points(category)
            .map_or(SERVE_NOTHING, |p| match state {
                LoadState::Normal => p.normal.point,
                LoadState::Relaxed => p.relaxed.point,
            })
    }

    pub fn points(&self, category: &str) -> Option<&CategoryPoints> {
        self.points.get(category)
    }

    /// This policy with the category's budget halved once more (a shadow check found it
    /// answering wrongly more often than its budget allows). `None` when the category has no
    /// budget to tighten.
    pub fn tightened(&self, category: &str) -> Option<Self> {
        let points = self.points(category)?;
        self.config.category(category)?.budget?;
        let mut next = self.clone();
        next.place(category, points.tightened + 1);
        Some(next)
    }

    /// Computes a category's operating points, its budget halved `tightened` times.
    fn place(&mut self, name: &str, tightened: u32) {
        let Some(category) = self.config.category(name) else {
            return;
        };
        let confidence = self.config.calibration.confidence;
        let explicit = |threshold: Threshold| Operating {
            point: OperatingPoint {
                threshold,
                cutoff: 0.0,
            },
            calibrated: None,
            budget: None,
        };
        let points = match category.budget {
            None => CategoryPoints {
                normal: explicit(category.threshold),
                relaxed: explicit(category.relaxed_threshold),
                tightened: 0,
            },
            Some(budget) => {
                let factor = 0.5_f64.powi(i32::try_from(tightened).unwrap_or(i32::MAX));
                let choose = |state: LoadState| {
                    let max = budget.effective(state) * factor;
                    // The judge is binary (every calibration score is 1): no cut-off applies.
                    let calibrated =
                        calibrate(&self.calibration, max, confidence).map(|c| Calibrated {
                            point: OperatingPoint {
                                cutoff: 0.0,
                                ..c.point
                            },
                            ..c
                        });
                    if calibrated.is_none() {
                        tracing::warn!(
                            category = name,
                            max_wrong_rate = max,
                            "no operating point meets the error budget on the calibration data: \
                             the category serves exact hits only"
                        );
                    }
                    Operating {
                        point: calibrated.map_or(SERVE_NOTHING, |c| c.point),
                        calibrated,
                        budget: Some(max),
                    }
                };
                CategoryPoints {
                    normal: choose(LoadState::Normal),
                    relaxed: choose(LoadState::Relaxed),
                    tightened,
                }
            }
        };
        if let Some(c) = points.normal.calibrated {
            tracing::info!(category = name, tightened, "operating point: {c}");
        }
        self.points.insert(name.to_owned(), points);
    }
}

/// Reads `similarity \t passed \t trap \t group` rows (a header line first), as `cachet eval
/// --scores` writes them. `passed` is the judge's score of the candidate: the hit guards and
/// the context comparison let it through (1) or not (0); a judge with a graded score (a
/// learned verifier) writes its probability, and the calibrated cut-off applies to it.
pub fn read_calibration(path: &Path) -> Result<Vec<CalibrationPoint>, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::ReadCalibration {
        path: path.to_owned(),
        source,
    })?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || PolicyError::CalibrationRow {
            path: path.to_owned(),
            line: i + 1,
        };
        let mut fields = line.split('\t');
        let mut number = || -> Result<f32, PolicyError> {
            fields
                .next()
                .and_then(|f| f.trim().parse::<f32>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(bad)
        };
        let (similarity, passed, trap) = (number()?, number()?, number()?);
        // The gateway's judge (threshold, hit guards, context) is binary: a candidate it
        // refuses is never served at any threshold, so it is calibrated as one below them all.
        let judged = if passed >= 0.5 { similarity } else { -1.0 };
        points.push(CalibrationPoint {
            similarity: judged,
            probability: 1.0,
            trap: trap != 0.0,
        });
    }
    Ok(points)
}

/// The index quota a category asks for.
pub fn quota_of(category: &Category) -> Quota {
    Quota {
        max_entries: category.max_entries,
        max_bytes: category.max_bytes,
        max_entries_per_owner: category.max_entries_per_tenant,
        eviction: match category.eviction {
            Eviction::Lru => EvictionPolicy::Lru,
            Eviction::Lfu => EvictionPolicy::Lfu,
            Eviction::Gdsf => EvictionPolicy::Gdsf,
        },
    }
}

/// An empty index for a category.
pub fn index_for(
    config: &Config,
    category: &Category,
    dim: usize,
) -> Result<VectorIndex, cachet_index::Error> {
    let params = IndexParams {
        dim,
        m: config.index.m.get(),
        ef_construction: config.index.ef_construction.get(),
        ef_search: config.index.ef_search.get(),
    };
    VectorIndex::try_new(params, quota_of(category))
}
