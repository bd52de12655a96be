//! The one error type of the embedder crate.

use std::path::PathBuf;

/// Everything that can go wrong between a text and its vector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An asset the configuration names is not on disk.
    #[error("{what} not found at {path}: run `scripts/fetch-assets` to download it")]
    MissingAsset { what: &'static str, path: PathBuf },

    /// A configuration value that cannot work, named by its field.
    #[error("invalid embedder setting {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// The device string is neither `cpu` nor `cuda:N`.
    #[error("invalid device {input:?}: expected \"cpu\" or \"cuda:N\" (for example \"cuda:0\")")]
    InvalidDevice { input: String },

    /// The ONNX Runtime shared library could not be loaded.
    #[error("failed to load onnx runtime from {path}")]
    LoadRuntime {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },

    /// ONNX Runtime is process-wide: it can be loaded from one file only.
    #[error(
        "onnx runtime is already loaded from {loaded} in this process; it cannot also be loaded from {requested}"
    )]
    RuntimeMismatch { loaded: PathBuf, requested: PathBuf },

    /// The CUDA execution provider could not be registered.
    #[error(
        "cannot use device cuda:{device_id}: the cuda execution provider failed to register; \
         install the gpu build with `scripts/fetch-assets --gpu`, set the embedder's onnxruntime path to \
         assets/onnxruntime-gpu/libonnxruntime.so.1.31.1, and put the CUDA 13 (cudart, cublas, cublasLt, \
         curand) and cuDNN 9 libraries on LD_LIBRARY_PATH"
    )]
    CudaUnavailable {
        device_id: u32,
        #[source]
        source: ort::Error,
    },

    /// Creating the session from the model file failed.
    #[error("failed to load onnx model at {path}")]
    LoadModel {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },

    /// The model's inputs or outputs are not those of a BERT-style encoder.
    #[error("unsupported model at {path}: {reason}")]
    UnsupportedModel { path: PathBuf, reason: String },

    /// The model failed on an input of the configured maximum length.
    #[error(
        "the model failed on a warm-up input of {max_tokens} tokens (is max_tokens above the model's limit?)"
    )]
    WarmUp {
        max_tokens: usize,
        #[source]
        source: Box<Error>,
    },

    /// Any other ONNX Runtime failure (session options, running the model).
    #[error("onnx runtime failed while {context}")]
    Ort {
        context: &'static str,
        #[source]
        source: ort::Error,
    },

    /// The tokenizer file could not be read or parsed.
    #[error("failed to load tokenizer at {path}")]
    LoadTokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },

    /// Tokenizing the input failed.
    #[error("failed to tokenize input")]
    Tokenize(#[source] tokenizers::Error),

    /// A backend returned something other than one vector of `dim` floats per text.
    #[error("backend returned {got} vectors for {expected} texts")]
    BatchSize { expected: usize, got: usize },

    /// The worker thread could not be spawned.
    #[error("failed to spawn the embedder worker thread")]
    SpawnWorker(#[source] std::io::Error),

    /// The worker thread has stopped (it panicked or the runtime is shutting down).
    #[error("the embedder worker has stopped")]
    WorkerStopped,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
