//! Loading ONNX Runtime once per process and refusing a second, different library.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use crate::error::{Error, Result};

/// The library the process loaded and the environment built on it.
///
/// `ort::init_from` quietly ignores every call after the first, so a second embedder configured
/// with another library would run on the first one. Remembering the path turns that into an error.
struct LoadedRuntime {
    path: PathBuf,
    environment: Environment,
}

static RUNTIME: Mutex<Option<LoadedRuntime>> = Mutex::new(None);

/// The process's ONNX Runtime environment, loading the library at `path` on first use.
pub(crate) fn environment(path: &Path) -> Result<Environment> {
    if !path.is_file() {
        return Err(Error::MissingAsset {
            what: "onnx runtime library",
            path: path.to_path_buf(),
        });
    }
    // Canonical paths so that `./assets/x` and `/repo/assets/x` count as the same library.
    let requested = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    // A poisoned lock only means another thread panicked while loading; the state is still valid.
    let mut runtime = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(loaded) = runtime.as_ref() {
        return if loaded.path == requested {
            Ok(loaded.environment.clone())
        } else {
            Err(Error::RuntimeMismatch {
                loaded: loaded.path.clone(),
                requested,
            })
        };
    }
    let builder = ort::init_from(&requested).map_err(|source| Error::LoadRuntime {
        path: requested.clone(),
        source,
    })?;
    let environment = builder
        .with_name("cachet-embedder")
        .build()
        .map_err(|source| Error::Ort {
            context: "creating the environment",
            source,
        })?;
    *runtime = Some(LoadedRuntime {
        path: requested,
        environment: environment.clone(),
    });
    Ok(environment)
}
