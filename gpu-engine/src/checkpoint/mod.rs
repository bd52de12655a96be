//! Reading a Hugging Face checkpoint folder: config.json, safetensors weights.

mod config;
mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use weights::{HostTensor, WeightFiles};

use std::path::Path;

use crate::{Error, Result};

/// Reads a JSON file into `T`, keeping the path in the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })
}
