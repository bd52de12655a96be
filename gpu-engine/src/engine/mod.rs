//! The engine: a worker thread that owns model, scheduler and pool, and the async handle to it.
//!
//! Requests arrive over a bounded channel; the worker batches whatever is running,
//! steps the model, samples, detokenizes and streams events back per request. A request
//! whose receiver is dropped (the client went away) is aborted and its blocks released.

mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::ModelConfig;
use crate::kv::{BlockPool, TenantSalt};
use crate::model::ForwardStep;
use crate::sampling::SamplingParams;
use crate::scheduler::{CacheCounters, Scheduler, SchedulerConfig};
use crate::text::TextCodec;
use crate::{Error, Result};

/// Sizes and limits of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub kv_blocks: usize,
    pub block_size: usize,
    pub max_batch_tokens: usize,
    pub max_running_seqs: usize,
    /// Reuse the KV of cached prompt prefixes (on unless turned off for a comparison).
    pub prefix_caching: bool,
}

impl EngineSettings {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.kv_blocks == 0 {
            "kv-blocks must be at least 1"
        } else if self.block_size == 0 {
            "block-size must be at least 1"
        } else if self.max_batch_tokens == 0 {
            "max-batch-tokens must be at least 1"
        } else if self.max_running_seqs == 0 {
            "max-running-seqs must be at least 1"
        } else {
            return Ok(());
        };
        Err(Error::InvalidSettings(problem.into()))
    }
}

/// One generation request, already tokenized.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub salt: TenantSalt,
}

/// Why generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token or stop string.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// What a request's stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateEvent {
    /// New output text (never empty).
    Text { delta: String },
    /// The end of the request, with every token it generated (an end-of-sequence token
    /// left out).
    Finished {
        reason: FinishReason,
        usage: Usage,
        token_ids: Vec<u32>,
    },
    /// The model failed; the request is over.
    Failed(String),
}

/// A snapshot of the engine's state, for /metrics and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub kv_blocks_total: usize,
    pub kv_blocks_free: usize,
    pub kv_blocks_cached: usize,
    pub n_waiting: usize,
    pub n_running: usize,
    pub cache: CacheCounters,
    pub steps: StepCounters,
}

/// Where the worker's time went since it started: the model's forward passes, split
/// into decode-only steps (one query token per sequence, which includes the prefill of a
/// one-token prompt) and mixed steps (some sequence has a prefill chunk of more tokens),
/// and the host work around them (scheduling, bookkeeping, detokenizing), during which
/// the device waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounters {
    pub decode_steps: u64,
    pub mixed_steps: u64,
    /// Query tokens of the decode steps (one per running sequence).
    pub decode_tokens: u64,
    /// Query tokens of the mixed steps, prefill chunks and decodes together.
    pub mixed_tokens: u64,
    pub decode_forward: Duration,
    pub mixed_forward: Duration,
    pub host: Duration,
}

enum Command {
    Generate {
        request: GenerateRequest,
        events: mpsc::UnboundedSender<GenerateEvent>,
    },
    Stats(oneshot::Sender<EngineStats>),
}

/// Facts about the loaded model that request handling needs.
#[derive(Debug)]
pub struct EngineInfo {
    pub model_name: String,
    /// Most tokens (prompt plus output) one sequence may have.
    pub max_context: usize,
    pub vocab_size: usize,
    pub codec: Arc<TextCodec>,
}

/// Starts a named thread.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|source| Error::Io {
            path: format!("{name} thread").into(),
            source,
        })
}

/// A cloneable async handle to the engine's worker thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    info: Arc<EngineInfo>,
}

impl EngineHandle {
    /// Starts the worker thread with a loaded model.
    pub fn start(
        model: Box<dyn ForwardStep>,
        codec: Arc<TextCodec>,
        config: &ModelConfig,
        model_name: String,
        settings: EngineSettings,
    ) -> Result<Self> {
        settings.validate()?;
        let pool = BlockPool::new(settings.kv_blocks, settings.block_size);
        let max_context = config
            .max_positions
            .min(settings.kv_blocks * settings.block_size);
        let scheduler = Scheduler::new(
            SchedulerConfig {
                max_batch_tokens: settings.max_batch_tokens,
                max_running_seqs: settings.max_running_seqs,
                prefix_caching: settings.prefix_caching,
            },
            pool,
        );
        let (commands, receiver) = mpsc::channel(1024);
        let (output, batches) = std::sync::mpsc::channel();
        let worker = worker::Worker::new(
            model,
            scheduler,
            codec.clone(),
            config.eos_token_ids.clone(),
            max_context,
            output,
        );
        spawn("cachet-engine-output", move || worker::deliver(batches))?;
        spawn("cachet-engine-worker", move || worker.run(receiver))?;
        Ok(Self {
            commands,
            info: Arc::new(EngineInfo {
                model_name,
                max_context,
                vocab_size: config.vocab_size,
                codec,
            }),
        })
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Queues a request; its events arrive on the returned receiver. Dropping the
    /// receiver aborts the request.
    pub async fn generate(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<GenerateEvent>> {
        let n_tokens = request.prompt_ids.len();
        if n_tokens == 0 {
            return Err(Error::EmptyPrompt);
        }
        // At least one token must fit after the prompt.
        if n_tokens >= self.info.max_context {
            return Err(Error::PromptTooLong {
                n_tokens,
                max_tokens: self.info.max_context - 1,
            });
        }
        let (events, receiver) = mpsc::unbounded_channel();
        self.commands
            .send(Command::Generate { request, events })
            .await
            .map_err(|_| Error::EngineStopped)?;
        Ok(receiver)
    }

    /// The engine's current state.
    pub async fn stats(&self) -> Result<EngineStats> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(Command::Stats(reply))
            .await
            .map_err(|_| Error::EngineStopped)?;
        receiver.await.map_err(|_| Error::EngineStopped)
    }
}
