//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine, from loading a checkpoint to serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid json in {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "unsupported architecture {0:?}: supported are LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM"
    )]
    UnsupportedArchitecture(String),
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    #[error("invalid safetensors file {path}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("checkpoint has no tensor {0}")]
    MissingTensor(String),
    #[error("tensor {name} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor {name} has unsupported dtype {dtype}")]
    TensorDtype { name: String, dtype: String },
    #[error("failed to load tokenizer from {path}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("tokenization failed")]
    Tokenize(#[source] tokenizers::Error),
    #[error("checkpoint has no chat template")]
    NoChatTemplate,
    #[error("failed to render the chat template")]
    ChatTemplate(#[from] minijinja::Error),
    #[error("the prompt has {n_tokens} tokens, more than the {max_tokens} the engine can hold")]
    PromptTooLong { n_tokens: usize, max_tokens: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("invalid engine settings: {0}")]
    InvalidSettings(String),
    #[error("unknown device {0:?}: use \"cpu\" or \"cuda:N\"")]
    UnsupportedDevice(String),
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("cuda call failed: {what}")]
    Cuda {
        what: String,
        #[source]
        source: cudarc::driver::DriverError,
    },
    #[error("nvrtc call failed: {what}")]
    Nvrtc {
        what: String,
        #[source]
        source: cudarc::nvrtc::result::NvrtcError,
    },
    #[error("failed to compile the cuda kernels for {arch}: {log}")]
    KernelCompile { arch: String, log: String },
    #[error("cublas call failed: {what}")]
    Cublas {
        what: String,
        #[source]
        source: cudarc::cublas::result::CublasError,
    },
    #[error("the engine worker has stopped")]
    EngineStopped,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
