//! Config hot reload: the file is re-read when it changes on disk (polled) or when the admin
//! API asks. A file that does not validate is refused with every problem and its field path,
//! and the running policy stays in force.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cachet_policies::{Config, Problem};
use sha2::{Digest, Sha256};

use crate::policy::Policy;
use crate::state::AppState;

/// Where the config comes from, with the command-line overrides that outlive a reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub upstream: Option<url::Url>,
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config {path} refused: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: cachet_policies::Error,
    },
    #[error("config {path} refused: {source}")]
    Policy {
        path: PathBuf,
        #[source]
        source: Box<crate::policy::PolicyError>,
    },
    #[error("config {path} refused: failed to index its categories: {source}")]
    Index {
        path: PathBuf,
        #[source]
        source: cachet_index::Error,
    },
}

impl ReloadError {
    /// Every problem with its field path, for the API's answer.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Invalid { source, .. } if !source.problems().is_empty() => {
                source.problems().to_vec()
            }
            other => vec![Problem {
                path: String::new(),
                message: std::error::Error::source(other)
                    .map_or_else(|| other.to_string(), ToString::to_string),
            }],
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// Sections that changed but take effect only after a restart.
    pub restart_required: Vec<&'static str>,
}

impl ConfigSource {
    /// Reads and validates the file, with the environment variables it names (its tokens), and
    /// applies the overrides.
    pub fn load(&self) -> Result<Config, ReloadError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut config =
            Config::load_with_env(&self.path, &env).map_err(|source| ReloadError::Invalid {
                path: self.path.clone(),
                source,
            })?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(url) = &self.upstream {
            // An explicit upstream replaces the bundled engine.
            config.engine = None;
            config.upstream.url = url.clone();
        }
        Ok(config)
    }

    fn fingerprint(&self) -> Option<[u8; 32]> {
        let bytes = std::fs::read(&self.path).ok()?;
        Some(Sha256::digest(&bytes).into())
    }
}

/// Reloads the config now. Reloads never overlap.
pub async fn reload(state: &AppState) -> Result<Reloaded, ReloadError> {
    let Some(source) = state.config_source.as_ref() else {
        return Ok(Reloaded {
            restart_required: Vec::new(),
        });
    };
    let _one_at_a_time = state.reload_lock.lock().await;
    let result = apply(state, source).await;
    match &result {
        Ok(reloaded) => {
            metrics::counter!("cachet_config_reloads_total", "outcome" => "applied").increment(1);
            if reloaded.restart_required.is_empty() {
                tracing::info!(path = %source.path.display(), "config reloaded");
            } else {
                tracing::warn!(
                    path = %source.path.display(),
                    restart_required = ?reloaded.restart_required,
                    "config reloaded; changes to these sections take effect after a restart"
                );
            }
        }
        Err(error) => {
            metrics::counter!("cachet_config_reloads_total", "outcome" => "refused").increment(1);
            let problems: Vec<String> = error.problems().iter().map(|p| p.to_string()).collect();
            tracing::error!(
                path = %source.path.display(),
                ?problems,
                "config refused; the running policy stays in force"
            );
        }
    }
    result
}

async fn apply(state: &AppState, source: &ConfigSource) -> Result<Reloaded, ReloadError> {
    let config = std::sync::Arc::new(source.load()?);
    let cache = state.cache();
    let restart_required = cache.config().restart_required(&config);
    let policy = Policy::build(config, cache.embedder())
        .await
        .map_err(|source_error| ReloadError::Policy {
            path: source.path.clone(),
            source: Box::new(source_error),
        })?;
    cache
        .apply(policy)
        .await
        .map_err(|source_error| ReloadError::Index {
            path: source.path.clone(),
            source: source_error,
        })?;
    Ok(Reloaded { restart_required })
}

/// Reloads whenever the file's content changes, checking every `interval`.
pub async fn watch(state: AppState, interval: Duration) {
    let Some(source) = state.config_source.clone() else {
        return;
    };
    let mut seen = source.fingerprint();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = source.fingerprint();
        // A file being replaced can be missing for a moment: wait for it to come back.
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        // Errors are logged by `reload`; the watcher tries again on the next change.
        let _ = reload(&state).await;
    }
}
