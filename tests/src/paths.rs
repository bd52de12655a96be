//! Where the repository, the built `cachet` binary, the model assets and Python live.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::{Error, Result};

/// The workspace root; the gateway runs with it as its working directory so that the
/// relative asset paths of `configs/default.toml` resolve.
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The `cachet` binary under test.
///
/// `CACHET_BIN` wins. Otherwise the binary is looked up next to the running test executable
/// (`target/<profile>/deps/e2e-*` → `target/<profile>/cachet`), which follows
/// `CARGO_TARGET_DIR` and the profile without being told, and then in
/// `$CARGO_TARGET_DIR/debug` or `<repo>/target/debug`.
pub fn cachet_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CACHET_BIN") {
        return existing(PathBuf::from(path), "cachet binary", BUILD_HINT);
    }
    let beside_test = std::env::current_exe().ok().and_then(|exe| {
        let profile_dir = exe.parent()?.parent()?;
        Some(profile_dir.join("cachet"))
    });
    let path = match beside_test.filter(|path| path.is_file()) {
        Some(path) => path,
        None => {
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo_root().join("target"), PathBuf::from);
            let path = target_dir.join("debug").join("cachet");
            existing(path, "cachet binary", BUILD_HINT)?
        }
    };
    static STALENESS_CHECKED: OnceLock<()> = OnceLock::new();
    STALENESS_CHECKED.get_or_init(|| warn_if_stale(&path));
    Ok(path)
}

/// Says so on stderr when a source file of the gateway or its libraries is newer than the
/// binary: the tests would then judge old code. Only a warning, since mtimes can mislead.
fn warn_if_stale(binary: &Path) {
    let Some(built) = modified(binary) else {
        return;
    };
    let root = repo_root();
    let newer = ["gateway", "policies", "embedder", "index"]
        .iter()
        .flat_map(|krate| newer_files(&root.join(krate).join("src"), built))
        .next();
    if let Some(source) = newer {
        eprintln!(
            "warning: {} is newer than {}; run `cargo build -p cachet-gateway` to test the current code",
            source.display(),
            binary.display()
        );
    }
}

fn newer_files(dir: &Path, than: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(newer_files(&path, than));
        } else if modified(&path).is_some_and(|time| time > than) {
            found.push(path);
        }
    }
    found
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

const BUILD_HINT: &str =
    "build it first with `cargo build -p cachet-gateway` (the e2e tests run the real binary)";

/// The Python interpreter that has the `openai` SDK: `CACHET_PYTHON` or `assets/venv/bin/python`.
pub fn python() -> Result<PathBuf> {
    let path = std::env::var_os("CACHET_PYTHON")
        .map_or_else(|| repo_root().join("assets/venv/bin/python"), PathBuf::from);
    existing(path, "python with the openai sdk", FETCH_HINT)
}

/// The Python driver script of the tests.
pub fn openai_client_script() -> PathBuf {
    repo_root().join("tests/py/openai_client.py")
}

/// Checks that the embedder's model files named by the default config are in place, so that a
/// missing `scripts/fetch-assets` run fails with a clear message instead of a gateway crash.
pub fn require_model_assets() -> Result<()> {
    for relative in [
        "assets/minilm-q8/model.onnx",
        "assets/minilm-q8/tokenizer.json",
        "assets/onnxruntime/libonnxruntime.so.1.32.0",
    ] {
        existing(repo_root().join(relative), "model asset", FETCH_HINT)?;
    }
    Ok(())
}

const FETCH_HINT: &str = "run `scripts/fetch-assets` first";

fn existing(path: PathBuf, what: &'static str, hint: &'static str) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Missing { what, path, hint })
    }
}
