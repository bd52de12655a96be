//! The handle's micro-batching, observed through test backends (no model or assets needed).

// Tests unwrap: a panic with the error is the most useful failure report here.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use cachet_embedder::{BatchOptions, EmbedBackend, Embedder, Error, Result};

/// Records the size of every batch and answers each text `"n"` with the vector `[n]`.
struct CountingBackend {
    batch_sizes: Arc<Mutex<Vec<usize>>>,
    /// When set, the first batch waits for a message here before it returns.
    gate: Option<std_mpsc::Receiver<()>>,
    /// Told when the first batch has started, so the test knows the worker is busy.
    started: Option<std_mpsc::Sender<()>>,
    dropped: Option<std_mpsc::Sender<()>>,
}

impl CountingBackend {
    fn new() -> (Self, Arc<Mutex<Vec<usize>>>) {
        let batch_sizes = Arc::new(Mutex::new(Vec::new()));
        let backend = Self {
            batch_sizes: Arc::clone(&batch_sizes),
            gate: None,
            started: None,
            dropped: None,
        };
        (backend, batch_sizes)
    }
}

impl EmbedBackend for CountingBackend {
    fn embed_batch(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.batch_sizes.lock().unwrap().push(texts.len());
        if let Some(started) = self.started.take() {
            started.send(()).unwrap();
        }
        if let Some(gate) = self.gate.take() {
            gate.recv().unwrap();
        }
        texts
            .iter()
            .map(|text| match text.parse::<f32>() {
                Ok(value) => Ok(vec![value]),
                Err(_) => Err(Error::WorkerStopped),
            })
            .collect()
    }

    fn dim(&self) -> usize {
        1
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            let _ = dropped.send(());
        }
    }
}

fn options(max_batch: usize, batch_wait: Duration) -> BatchOptions {
    BatchOptions {
        max_batch,
        batch_wait,
        ..BatchOptions::default()
    }
}

/// A wait long enough that a batch only closes by filling up, so batch sizes are deterministic.
const FILL_UP: Duration = Duration::from_secs(30);

async fn embed_concurrently(embedder: &Embedder, texts: &[&str]) -> Vec<Result<Vec<f32>>> {
    let tasks: Vec<_> = texts
        .iter()
        .map(|text| {
            let embedder = embedder.clone();
            let text = text.to_string();
            tokio::spawn(async move { embedder.embed(&text).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test]
async fn concurrent_calls_share_a_batch() {
    let (backend, batch_sizes) = CountingBackend::new();
    let embedder = Embedder::with_backend(backend, options(8, FILL_UP)).unwrap();
    let texts: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();

    let results = embed_concurrently(&embedder, &texts).await;

    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(
            result.unwrap(),
            vec![i as f32],
            "each caller gets its own vector"
        );
    }
    assert_eq!(*batch_sizes.lock().unwrap(), vec![8, 8]);
}

#[tokio::test(flavor = "current_thread")]
async fn requests_queued_behind_a_running_batch_are_drained_together() {
    let (mut backend, batch_sizes) = CountingBackend::new();
    let (release, gate) = std_mpsc::channel();
    let (started_tx, started) = std_mpsc::channel();
    backend.gate = Some(gate);
    backend.started = Some(started_tx);
    // No waiting: only what is already queued joins a batch.
    let embedder = Embedder::with_backend(backend, options(64, Duration::ZERO)).unwrap();

    let first = tokio::spawn({
        let embedder = embedder.clone();
        async move { embedder.embed("0").await }
    });
    tokio::task::yield_now().await;
    started.recv().unwrap();
    let queued: Vec<_> = (1..=5)
        .map(|i| {
            let embedder = embedder.clone();
            tokio::spawn(async move { embedder.embed(&i.to_string()).await })
        })
        .collect();
    // On this single-threaded runtime, yielding lets every spawned task enqueue its request.
    tokio::task::yield_now().await;
    release.send(()).unwrap();

    assert_eq!(first.await.unwrap().unwrap(), vec![0.0]);
    for (i, task) in queued.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), vec![(i + 1) as f32]);
    }
    assert_eq!(*batch_sizes.lock().unwrap(), vec![1, 5]);
}

#[tokio::test]
async fn a_request_larger_than_max_batch_is_split_in_order() {
    let (backend, batch_sizes) = CountingBackend::new();
    let embedder = Embedder::with_backend(backend, options(8, Duration::ZERO)).unwrap();
    let texts: Vec<String> = (0..20).map(|i| i.to_string()).collect();

    let vectors = embedder.embed_many(texts).await.unwrap();

    let expected: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32]).collect();
    assert_eq!(vectors, expected);
    assert_eq!(*batch_sizes.lock().unwrap(), vec![8, 8, 4]);
}

#[tokio::test]
async fn a_request_that_does_not_fit_opens_the_next_batch() {
    let (backend, batch_sizes) = CountingBackend::new();
    let embedder = Embedder::with_backend(backend, options(4, FILL_UP)).unwrap();
    let first = embedder.embed_many(vec!["1".into(), "2".into(), "3".into()]);
    let second = embedder.embed_many(vec!["4".into(), "5".into()]);
    let third = embedder.embed_many(vec!["6".into(), "7".into()]);

    let (first, second, third) = tokio::join!(first, second, third);

    assert_eq!(first.unwrap(), vec![vec![1.0], vec![2.0], vec![3.0]]);
    assert_eq!(second.unwrap(), vec![vec![4.0], vec![5.0]]);
    assert_eq!(third.unwrap(), vec![vec![6.0], vec![7.0]]);
    // 3 + 2 would exceed 4, so the second request waits for the next batch, which it fills with the third.
    assert_eq!(*batch_sizes.lock().unwrap(), vec![3, 4]);
}

#[tokio::test]
async fn a_failing_request_does_not_fail_its_batch_neighbours() {
    let (backend, batch_sizes) = CountingBackend::new();
    let embedder = Embedder::with_backend(backend, options(3, FILL_UP)).unwrap();

    let results = embed_concurrently(&embedder, &["1", "not a number", "2"]).await;

    assert_eq!(results[0].as_ref().unwrap(), &vec![1.0]);
    assert!(results[1].is_err());
    assert_eq!(results[2].as_ref().unwrap(), &vec![2.0]);
    assert_eq!(*batch_sizes.lock().unwrap(), vec![3, 1, 1, 1]);
}

#[tokio::test]
async fn empty_input_list_needs_no_backend_call() {
    let (backend, batch_sizes) = CountingBackend::new();
    let embedder = Embedder::with_backend(backend, options(8, Duration::ZERO)).unwrap();

    assert!(embedder.embed_many(Vec::new()).await.unwrap().is_empty());
    assert_eq!(embedder.dim(), 1);
    assert!(batch_sizes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_worker_stops_when_the_last_handle_is_dropped() {
    let (mut backend, _) = CountingBackend::new();
    let (dropped_tx, dropped) = std_mpsc::channel();
    backend.dropped = Some(dropped_tx);
    let embedder = Embedder::with_backend(backend, options(8, Duration::ZERO)).unwrap();
    let clone = embedder.clone();
    assert_eq!(clone.embed("1").await.unwrap(), vec![1.0]);

    drop(embedder);
    drop(clone);

    // Dropping the last handle waits for the worker: the backend is gone by now.
    dropped
        .try_recv()
        .expect("the worker has released its backend when the last handle is dropped");
}

/// A backend that panics, standing in for a crashed worker.
struct PanickingBackend;

impl EmbedBackend for PanickingBackend {
    fn embed_batch(&mut self, _texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        panic!("backend crashed (expected by this test)")
    }

    fn dim(&self) -> usize {
        1
    }
}

#[tokio::test]
async fn a_crashed_worker_is_an_error_not_a_hang() {
    let embedder = Embedder::with_backend(PanickingBackend, options(8, Duration::ZERO)).unwrap();

    let first = embedder.embed("1").await;
    let second = embedder.embed("2").await;

    assert!(matches!(first, Err(Error::WorkerStopped)), "{first:?}");
    assert!(matches!(second, Err(Error::WorkerStopped)), "{second:?}");
}

#[test]
fn zero_max_batch_is_rejected() {
    let (backend, _) = CountingBackend::new();
    let error = Embedder::with_backend(backend, options(0, Duration::ZERO)).unwrap_err();
    assert!(error.to_string().contains("max_batch"), "{error}");
}
