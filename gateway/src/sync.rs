//! Keeping this gateway's indexes in step with the entry store: filling them at start-up,
//! following the changes other gateways make to a shared store, rebuilding them when that
//! feed lost continuity, and snapshotting the embedded store to disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachet_index::{Change, MemoryStore};
use tokio::sync::mpsc::Receiver;

use crate::cache::{Cache, now_ms};

/// Indexes every live entry of the store; returns how many, or `None` when the store could not
/// be read (the gateway then starts with what it has and serves misses meanwhile).
pub async fn load_from_store(cache: &Cache) -> Option<usize> {
    let started = Instant::now();
    let metas = cache.store().scan(now_ms()).await?;
    let count = metas.len();
    cache.admit(metas).await;
    tracing::info!(
        entries = count,
        store = cache.store().kind(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "indexed the store's entries"
    );
    Some(count)
}

/// Applies other gateways' inserts and deletes to this gateway's indexes until the feed ends.
/// The feed opens with a `Resync` once the store is reachable, which fills the indexes; `filled`
/// is told when that first rebuild is done.
pub async fn follow(
    cache: Arc<Cache>,
    mut changes: Receiver<Change>,
    filled: tokio::sync::oneshot::Sender<()>,
) {
    let mut filled = Some(filled);
    while let Some(change) = changes.recv().await {
        match change {
            Change::Put(meta) => {
                // This index evicts to stay within its quota like the one that stored the
                // entry; its victims leave the store too, so that every replica and the store
                // agree (a victim deleted twice is harmless).
                cache.admit(vec![meta]).await;
            }
            Change::Delete(id) => cache.unindex(&[id]),
            Change::Resync => {
                resync(&cache).await;
                if let Some(filled) = filled.take() {
                    let _ = filled.send(());
                }
            }
        }
    }
    tracing::debug!("store change feed ended");
}

/// Rebuilds the indexes from the store: after the change feed lost continuity, the store may
/// hold anything (a restarted Redis holds nothing).
pub async fn resync(cache: &Cache) {
    let mut retry = Duration::from_millis(200);
    loop {
        if let Some(metas) = cache.store().scan(now_ms()).await {
            for index in cache.all_indexes() {
                index.clear();
            }
            cache.admit(metas).await;
            metrics::counter!("cachet_store_resyncs_total").increment(1);
            tracing::info!("indexes rebuilt from the store");
            return;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(5));
    }
}

/// Writes the embedded store to `path` now, off the async workers.
pub async fn snapshot(store: Arc<MemoryStore>, path: PathBuf) {
    let started = Instant::now();
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || {
        // The snapshot's directory is made on first use, like the file.
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| cachet_index::Error::SnapshotIo {
                action: "create the directory of",
                path: target.clone(),
                source,
            })?;
        }
        store.save_snapshot(&target)
    })
    .await;
    match written {
        Ok(Ok(stats)) => tracing::debug!(
            path = %path.display(),
            ?stats,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        ),
        Ok(Err(error)) => {
            metrics::counter!("cachet_snapshot_failures_total").increment(1);
            tracing::warn!(path = %path.display(), %error, "failed to write the snapshot");
        }
        Err(error) => tracing::warn!(%error, "snapshot task failed"),
    }
}

/// Snapshots the embedded store every `interval`.
pub async fn snapshot_every(store: Arc<MemoryStore>, path: PathBuf, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        snapshot(Arc::clone(&store), path.clone()).await;
    }
}

/// The embedded store restored from its snapshot, or empty when there is none or it cannot be
/// trusted (then it says why, and the bad file is left for inspection).
pub fn restore(path: &std::path::Path) -> MemoryStore {
    match MemoryStore::load_snapshot(path, now_ms()) {
        Ok(store) => {
            tracing::info!(path = %path.display(), entries = store.len(), "snapshot restored");
            store
        }
        Err(cachet_index::Error::SnapshotMissing { .. }) => {
            tracing::info!(path = %path.display(), "no snapshot yet; starting empty");
            MemoryStore::new()
        }
        Err(error) => {
            tracing::error!(
                path = %path.display(),
                %error,
                "snapshot refused; starting with an empty cache"
            );
            MemoryStore::new()
        }
    }
}
