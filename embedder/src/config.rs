//! What the embedder is started with: file locations, device and batching limits.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where the model runs. Chosen explicitly; a device that cannot run is a start-up error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// ONNX Runtime's CUDA execution provider on the GPU with this ordinal.
    Cuda(u32),
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let invalid = || Error::InvalidDevice {
            input: input.to_owned(),
        };
        let trimmed = input.trim();
        if trimmed.eq_ignore_ascii_case("cpu") {
            return Ok(Self::Cpu);
        }
        let (kind, ordinal) = trimmed.split_once(':').ok_or_else(invalid)?;
        if !kind.eq_ignore_ascii_case("cuda") || ordinal.starts_with('+') {
            return Err(invalid());
        }
        ordinal.parse().map(Self::Cuda).map_err(|_| invalid())
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// Everything [`crate::Embedder::start`] needs; the gateway's config layer builds it.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// The ONNX model (a BERT-style encoder whose first output is `last_hidden_state`).
    pub model: PathBuf,
    /// The Hugging Face `tokenizer.json` that belongs to the model.
    pub tokenizer: PathBuf,
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.3x.y`).
    pub onnxruntime: PathBuf,
    /// CPU or one CUDA device.
    pub device: Device,
    /// Inputs are truncated to this many tokens, special tokens included.
    pub max_tokens: usize,
    /// The most texts one model run takes.
    pub max_batch: usize,
    /// How long the worker waits for more requests to fill a batch once it has one.
    pub batch_wait: Duration,
    /// ONNX Runtime intra-op threads; 0 chooses (see [`EmbedderConfig::threads`]).
    pub intra_threads: usize,
    /// The most texts one model run takes; `None` chooses by device (see
    /// [`EmbedderConfig::rows_per_run`]).
    pub rows_per_run: Option<NonZeroUsize>,
}

impl EmbedderConfig {
    /// A config with the defaults for everything but the three files.
    pub fn new(model: PathBuf, tokenizer: PathBuf, onnxruntime: PathBuf) -> Self {
        Self {
            model,
            tokenizer,
            onnxruntime,
            device: Device::Cpu,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_batch: DEFAULT_MAX_BATCH,
            batch_wait: DEFAULT_BATCH_WAIT,
            intra_threads: 0,
            rows_per_run: None,
        }
    }

    /// ONNX Runtime's intra-op threads: as configured, else on the CPU half the cores this
    /// process may use (at least one), and on a GPU ONNX Runtime's own choice (`None`).
    ///
    /// The embedder shares the machine with the gateway's request handling, and ONNX Runtime's
    /// threads spin between operators. On the 2-core build machine one thread embedded a
    /// 20-word question in p50 2.9-3.5 ms with p99 4.6-5.2 ms across rounds, two threads in
    /// p50 1.9-3.6 ms with p99 3.8-8.6 ms: faster when the host left both cores alone, with a
    /// far longer tail when it did not.
    pub fn threads(&self) -> Option<usize> {
        match (self.intra_threads, self.device) {
            (0, Device::Cpu) => Some(
                std::thread::available_parallelism()
                    .map_or(1, |cores| cores.get() / 2)
                    .max(1),
            ),
            (0, Device::Cuda(_)) => None,
            (threads, _) => Some(threads),
        }
    }

    /// The most texts one model run takes: as configured, else one on the CPU and no limit on
    /// a GPU.
    ///
    /// One text per run makes a text's vector independent of what it is batched with. With a
    /// dynamically quantized model (the shipped int8 one) that is not so otherwise: the
    /// activations' int8 scale is taken over the whole run, padding included, and a batch moved
    /// vectors by up to 0.009 in cosine, enough to flip a hit near a threshold. On the CPU,
    /// batching also bought little: eight 20-word questions took 14.4 ms as one run and 15.6 ms
    /// as eight (two threads, build machine). A GPU gains much more from batching.
    pub fn rows_per_run(&self) -> usize {
        match (self.rows_per_run, self.device) {
            (Some(rows), _) => rows.get(),
            (None, Device::Cpu) => 1,
            (None, Device::Cuda(_)) => usize::MAX,
        }
    }

    /// The batching part of the config.
    pub fn batch_options(&self) -> BatchOptions {
        BatchOptions {
            max_batch: self.max_batch,
            batch_wait: self.batch_wait,
            ..BatchOptions::default()
        }
    }
}

/// Default truncation length: all-MiniLM-L6-v2 was trained on 256-token inputs.
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// Default largest batch.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Default wait for a batch to fill: none.
///
/// One model run takes milliseconds, and requests that arrive meanwhile queue up and are
/// drained into the next batch anyway; an extra wait would only add latency to lone requests.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::ZERO;

/// How the worker forms batches out of queued requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// The most texts one backend call takes.
    pub max_batch: usize,
    /// After the first request arrives, how long to wait for others; zero takes only what is queued.
    pub batch_wait: Duration,
    /// How many requests may wait in the queue before callers wait to enqueue.
    pub queue_capacity: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            batch_wait: DEFAULT_BATCH_WAIT,
            queue_capacity: 1024,
        }
    }
}

impl BatchOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_batch == 0 {
            return Err(Error::InvalidConfig {
                field: "max_batch",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.queue_capacity == 0 {
            return Err(Error::InvalidConfig {
                field: "queue_capacity",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_is_half_the_cores_on_the_cpu_and_the_runtimes_choice_on_a_gpu() {
        let mut config = EmbedderConfig::new("m".into(), "t".into(), "o".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.threads(), Some((cores / 2).max(1)));
        config.intra_threads = 3;
        assert_eq!(config.threads(), Some(3));
        config.device = Device::Cuda(0);
        assert_eq!(config.threads(), Some(3));
        config.intra_threads = 0;
        assert_eq!(config.threads(), None);
    }

    #[test]
    fn rows_per_run_is_one_on_the_cpu_unless_configured() {
        let mut config = EmbedderConfig::new("m".into(), "t".into(), "o".into());
        assert_eq!(config.rows_per_run(), 1);
        config.device = Device::Cuda(0);
        assert_eq!(config.rows_per_run(), usize::MAX);
        config.rows_per_run = NonZeroUsize::new(8);
        assert_eq!(config.rows_per_run(), 8);
    }

    fn check(input: &str, expected: Option<Device>) {
        let parsed = input.parse::<Device>();
        match expected {
            Some(device) => assert_eq!(parsed.ok(), Some(device), "{input:?}"),
            None => {
                let message = parsed.expect_err(input).to_string();
                assert!(
                    message.contains("expected \"cpu\" or \"cuda:N\""),
                    "{message}"
                );
                assert!(message.contains(&format!("{input:?}")), "{message}");
            }
        }
    }

    #[test]
    fn parses_devices() {
        check("cpu", Some(Device::Cpu));
        check("CPU", Some(Device::Cpu));
        check("cuda:0", Some(Device::Cuda(0)));
        check("cuda:3", Some(Device::Cuda(3)));
        check(" cuda:1 ", Some(Device::Cuda(1)));
        check("cuda", None);
        check("cuda:", None);
        check("cuda:-1", None);
        check("cuda:+1", None);
        check("cuda:x", None);
        check("gpu:0", None);
        check("", None);
    }

    #[test]
    fn device_display_round_trips() {
        for device in [Device::Cpu, Device::Cuda(0), Device::Cuda(7)] {
            assert_eq!(device.to_string().parse::<Device>().ok(), Some(device));
        }
    }

    #[test]
    fn zero_batch_is_rejected() {
        let options = BatchOptions {
            max_batch: 0,
            ..BatchOptions::default()
        };
        let message = options.validate().expect_err("max_batch 0").to_string();
        assert!(message.contains("max_batch"), "{message}");
    }
}
