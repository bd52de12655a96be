//! The async handle: callers enqueue texts, one worker thread batches them into backend calls.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use tokio::runtime::Runtime;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::backend::EmbedBackend;
use crate::config::{BatchOptions, EmbedderConfig};
use crate::error::{Error, Result};
use crate::ort_backend::OrtBackend;

/// One caller's texts and where to send their vectors.
struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
    span: tracing::Span,
}

/// A cloneable handle to the embedding worker.
///
/// Requests from all clones meet in one bounded queue; the worker takes the first, drains
/// whatever else is queued (up to `max_batch` texts, waiting at most `batch_wait`), and runs
/// them as one batch. The worker stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Embedder {
    // Declared before `_worker` so that it is dropped first: the worker sees its queue close.
    sender: mpsc::Sender<Job>,
    dim: usize,
    provider: Arc<str>,
    _worker: Arc<WorkerThread>,
}

/// Joins the worker thread when the last handle goes, so that the model is released before
/// the caller goes on (and before the process exits: ONNX Runtime's CUDA provider crashes
/// when a session is still being torn down on another thread while the process exits).
#[derive(Debug)]
struct WorkerThread(Option<thread::JoinHandle<()>>);

impl Drop for WorkerThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take()
            && handle.thread().id() != thread::current().id()
            && handle.join().is_err()
        {
            tracing::warn!("the embedder worker panicked");
        }
    }
}

impl Embedder {
    /// Loads the model on the configured device and starts the worker.
    ///
    /// This blocks while the model loads (a fraction of a second on CPU), so call it at start-up
    /// or from `spawn_blocking`. Missing files, an unusable device and a second, different ONNX
    /// Runtime library are errors here, never later.
    pub fn start(config: EmbedderConfig) -> Result<Self> {
        let options = config.batch_options();
        options.validate()?;
        let backend = OrtBackend::new(&config)?;
        tracing::info!(
            model = %config.model.display(),
            device = %config.device,
            provider = backend.provider(),
            dim = backend.dim(),
            "embedder loaded"
        );
        Self::with_backend(backend, options)
    }

    /// Starts a worker around any backend; tests use this to observe batching.
    pub fn with_backend(
        backend: impl EmbedBackend + Send + 'static,
        options: BatchOptions,
    ) -> Result<Self> {
        options.validate()?;
        let dim = backend.dim();
        let provider: Arc<str> = Arc::from(backend.provider());
        // The worker waits for stragglers with a timer, so it needs a small runtime of its own;
        // building it here reports failure to the caller instead of inside the thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(Error::SpawnWorker)?;
        let (sender, receiver) = mpsc::channel(options.queue_capacity);
        let handle = thread::Builder::new()
            .name("cachet-embedder".to_owned())
            .spawn(move || {
                Worker {
                    backend,
                    receiver,
                    options,
                    runtime,
                }
                .run()
            })
            .map_err(Error::SpawnWorker)?;
        Ok(Self {
            sender,
            dim,
            provider,
            _worker: Arc::new(WorkerThread(Some(handle))),
        })
    }

    /// The unit vector of one text.
    ///
    /// An empty or whitespace-only text is valid: it embeds as the model's vector for
    /// `[CLS] [SEP]`, the same as sentence-transformers returns, so callers need no special case.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self.embed_many(vec![text.to_owned()]).await?;
        match (vectors.pop(), vectors.len()) {
            (Some(vector), 0) => Ok(vector),
            (last, rest) => Err(Error::BatchSize {
                expected: 1,
                got: rest + usize::from(last.is_some()),
            }),
        }
    }

    /// The unit vectors of several texts, in order. They may share a batch with other callers'.
    pub async fn embed_many(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, response) = oneshot::channel();
        let job = Job {
            texts,
            reply,
            span: tracing::Span::current(),
        };
        let wait = async {
            self.sender
                .send(job)
                .await
                .map_err(|_| Error::WorkerStopped)?;
            response.await.map_err(|_| Error::WorkerStopped)?
        };
        wait.instrument(tracing::trace_span!("embed_queue")).await
    }

    /// The length of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The execution provider running the model (`CPUExecutionProvider`, `CUDAExecutionProvider`).
    pub fn provider(&self) -> &str {
        &self.provider
    }
}

/// The worker thread's state: it alone touches the backend.
struct Worker<B> {
    backend: B,
    receiver: mpsc::Receiver<Job>,
    options: BatchOptions,
    runtime: Runtime,
}

impl<B: EmbedBackend> Worker<B> {
    fn run(mut self) {
        // A job that did not fit into the previous batch opens the next one.
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match self.runtime.block_on(self.receiver.recv()) {
                    Some(job) => job,
                    None => return,
                },
            };
            let (jobs, overflow) = self.gather(first);
            carried = overflow;
            self.process(jobs);
        }
    }

    /// Adds queued jobs to `first` until `max_batch` texts or the wait runs out.
    fn gather(&mut self, first: Job) -> (Vec<Job>, Option<Job>) {
        let deadline = Instant::now() + self.options.batch_wait;
        let mut n_texts = first.texts.len();
        let mut jobs = vec![first];
        while n_texts < self.options.max_batch {
            let next = match self.receiver.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        break;
                    }
                    // The timer must be created inside the runtime, hence the async block.
                    let receiver = &mut self.receiver;
                    let wait = async { tokio::time::timeout(remaining, receiver.recv()).await };
                    match self.runtime.block_on(wait) {
                        Ok(Some(job)) => job,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            if n_texts + next.texts.len() > self.options.max_batch {
                return (jobs, Some(next));
            }
            n_texts += next.texts.len();
            jobs.push(next);
        }
        (jobs, None)
    }

    /// Runs the jobs as one batch and answers each; if the batch fails, retries each job alone so
    /// that one bad request cannot fail the requests it happened to be batched with.
    fn process(&mut self, jobs: Vec<Job>) {
        // A caller that gave up (timeout, dropped future) no longer needs its vectors.
        let jobs: Vec<Job> = jobs
            .into_iter()
            .filter(|job| !job.reply.is_closed())
            .collect();
        if jobs.is_empty() {
            return;
        }
        let n_texts: usize = jobs.iter().map(|job| job.texts.len()).sum();
        let span = tracing::debug_span!("embed_batch", n_texts, n_requests = jobs.len());
        for job in &jobs {
            span.follows_from(&job.span);
        }
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|job| job.texts.iter().map(String::as_str))
            .collect();
        let result = span.in_scope(|| self.embed_chunked(&texts));
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for job in jobs {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.texts.len()).collect();
                    // The caller may have left since; nobody is waiting for the answer then.
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(error) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::debug!(%error, "batch failed, retrying its requests one by one");
                for job in jobs {
                    self.process(vec![job]);
                }
            }
        }
    }

    /// Calls the backend in chunks of at most `max_batch` texts (one job may be larger).
    fn embed_chunked(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.options.max_batch) {
            let chunk_vectors = self.backend.embed_batch(chunk)?;
            if chunk_vectors.len() != chunk.len() {
                return Err(Error::BatchSize {
                    expected: chunk.len(),
                    got: chunk_vectors.len(),
                });
            }
            vectors.extend(chunk_vectors);
        }
        Ok(vectors)
    }
}
