//! Locating the model assets for the integration tests, and failing loudly when they are missing.

use std::path::{Path, PathBuf};

use cachet_embedder::EmbedderConfig;

/// `assets/` at the repository root, or `CACHET_ASSETS_DIR` when set (for a copy elsewhere).
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("CACHET_ASSETS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("assets"),
    }
}

/// An asset's path; panics with the fix when it is missing, so that a test never passes without it.
pub fn asset(relative: &str) -> PathBuf {
    let path = assets_dir().join(relative);
    assert!(
        path.is_file(),
        "missing test asset {}: run `scripts/fetch-assets` from the repository root first",
        path.display()
    );
    path
}

/// The CPU config for the int8 all-MiniLM-L6-v2 model.
pub fn minilm_config() -> EmbedderConfig {
    EmbedderConfig::new(
        asset("minilm-int8/model.onnx"),
        asset("minilm-int8/tokenizer.json"),
        asset("onnxruntime/libonnxruntime.so.1.32.0"),
    )
}

/// The reference vectors computed with Python onnxruntime and numpy.
#[derive(Debug, serde::Deserialize)]
pub struct Reference {
    pub max_tokens: usize,
    pub items: Vec<ReferenceItem>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ReferenceItem {
    pub text: String,
    pub embedding: Vec<f32>,
}

/// The CPU config for the model the default config ships: all-MiniLM-L6-v2 with unsigned 8-bit
/// weights (per-channel zero points) and unsigned 8-bit activations quantized at run time (built
/// by `scripts/fetch-assets`).
pub fn shipped_config() -> EmbedderConfig {
    EmbedderConfig::new(
        asset("minilm-q8/model.onnx"),
        asset("minilm-q8/tokenizer.json"),
        asset("onnxruntime/libonnxruntime.so.1.32.0"),
    )
}

pub fn reference() -> Reference {
    reference_of("minilm-int8")
}

/// The reference vectors of a model under `assets/references/`.
pub fn reference_of(model: &str) -> Reference {
    let path = asset(&format!("references/{model}.json"));
    let json = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&json).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn norm(vector: &[f32]) -> f32 {
    vector.iter().map(|x| x * x).sum::<f32>().sqrt()
}
