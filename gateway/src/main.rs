//! The `cachet` binary: `cachet serve` runs the gateway; `cachet check-config` validates a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use cachet_embedder::Embedder;
use cachet_gateway::breaker::Breaker;
use cachet_gateway::cache::Cache;
use cachet_gateway::eval::embedder_config;
use cachet_gateway::load::LoadTracker;
use cachet_gateway::policy::Policy;
use cachet_gateway::reload::{self, ConfigSource};
use cachet_gateway::store::StoreClient;
use cachet_gateway::sync;
use cachet_gateway::upstream::Upstream;
use cachet_gateway::{AppState, admin_app, app};
use cachet_index::{Change, EntryStore, MemoryStore, OriginFilter, RedisOptions, RedisStore};
use cachet_policies::{Config, StoreSettings};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A semantic and prompt cache in front of OpenAI-compatible LLM APIs.
///
/// Point an OpenAI SDK's base URL at cachet: repeated and paraphrased questions are answered
/// from the cache; everything else is forwarded to the upstream.
#[derive(Debug, Parser)]
#[command(name = "cachet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Prints `listening on http://ADDR` once it serves. Log verbosity follows RUST_LOG
    /// (default `info`).
    Serve {
        /// Config file (TOML); `configs/default.toml` documents every key.
        #[arg(long, default_value = "configs/default.toml")]
        config: PathBuf,
        /// Address to listen on, overriding `[server] listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Upstream base URL (e.g. http://127.0.0.1:8000/v1), overriding `[upstream] url`;
        /// the bundled engine of an `[engine]` section is then not started.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Measure hit quality on labelled pairs: for each pair, store `a` in a fresh cache and look
    /// up `b` with the real embedder and policy; prints should-hits served and wrong answers.
    Eval(cachet_gateway::eval::EvalArgs),
    /// Validate a config file and print every problem with its field path.
    CheckConfig {
        #[arg(long, default_value = "configs/default.toml")]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // The graph and ONNX Runtime libraries log routine events at info.
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,hnsw_rs=warn,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
        } => {
            let source = config_source(&config, listen, upstream)?;
            tokio::runtime::Runtime::new()?.block_on(serve(source))
        }
        Command::Eval(args) => {
            print!("{}", cachet_gateway::eval::run(&args)?);
            Ok(())
        }
        Command::CheckConfig { config } => {
            config_source(&config, None, None)?
                .load()
                .with_context(|| format!("invalid config {}", config.display()))?;
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}

fn config_source(
    path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    upstream: Option<String>,
) -> anyhow::Result<ConfigSource> {
    let upstream = upstream
        .map(|url| {
            url::Url::parse(url.trim_end_matches('/'))
                .with_context(|| format!("--upstream {url:?} is not a url"))
        })
        .transpose()?;
    Ok(ConfigSource {
        path: path.to_owned(),
        listen,
        upstream,
    })
}

/// The store the config asks for, with what only its kind offers.
struct OpenedStore {
    backend: Arc<dyn EntryStore>,
    /// The embedded store's snapshots, when configured.
    snapshots: Option<Snapshots>,
    /// Other gateways' changes to a shared store.
    changes: Option<tokio::sync::mpsc::Receiver<Change>>,
}

/// Where and how often the embedded store is written to disk.
struct Snapshots {
    store: Arc<MemoryStore>,
    path: PathBuf,
    interval: Duration,
}

async fn open_store(config: &Config) -> anyhow::Result<OpenedStore> {
    match &config.store {
        StoreSettings::Memory {
            snapshot,
            snapshot_interval,
        } => {
            let store = match snapshot {
                Some(path) => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || sync::restore(&path)).await?
                }
                None => MemoryStore::new(),
            };
            let store = Arc::new(store);
            Ok(OpenedStore {
                backend: store.clone(),
                snapshots: snapshot.clone().map(|path| Snapshots {
                    store,
                    path,
                    interval: *snapshot_interval,
                }),
                changes: None,
            })
        }
        StoreSettings::Redis {
            url,
            key_prefix,
            connect_timeout,
            response_timeout,
            stream_max_len,
        } => {
            let options = RedisOptions {
                url: url.expose().clone(),
                key_prefix: key_prefix.clone(),
                connect_timeout: *connect_timeout,
                response_timeout: *response_timeout,
                stream_max_len: stream_max_len.get(),
            };
            // Redis may be down at start: the gateway then serves uncached and catches up
            // when it comes back, rather than refusing to start.
            let store = RedisStore::connect(options).context("invalid redis store settings")?;
            let changes = store.changes(OriginFilter::Others);
            Ok(OpenedStore {
                backend: Arc::new(store),
                snapshots: None,
                changes: Some(changes),
            })
        }
    }
}

/// How long start-up waits for a reachable shared store to fill the indexes before serving
/// without them.
const STORE_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Longest one store call may take before it counts as failed, above the store's own timeouts.
fn store_call_timeout(config: &Config) -> Duration {
    match &config.store {
        StoreSettings::Memory { .. } => Duration::from_secs(5),
        StoreSettings::Redis {
            connect_timeout,
            response_timeout,
            ..
        } => *connect_timeout + *response_timeout,
    }
}

async fn serve(source: ConfigSource) -> anyhow::Result<()> {
    // First, so that gauges set while starting (the store's state) are recorded.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("failed to install the metrics recorder")?;
    let config = Arc::new(
        source
            .load()
            .with_context(|| format!("invalid config {}", source.path.display()))?,
    );
    let embedder_config = embedder_config(&config);
    let embedder = tokio::task::spawn_blocking(move || Embedder::start(embedder_config))
        .await?
        .context("failed to start the embedder")?;
    let load = Arc::new(LoadTracker::new(&config.adaptive));
    let OpenedStore {
        backend,
        snapshots,
        changes,
    } = open_store(&config).await?;
    let breaker = Breaker::new(
        config.store_breaker.failures.get(),
        config.store_breaker.retry_after,
    );
    let store = StoreClient::new(backend, breaker, store_call_timeout(&config));
    let policy = Policy::build(Arc::clone(&config), &embedder)
        .await
        .context("failed to build the cache policy")?;
    let cache = Arc::new(
        Cache::new(policy, embedder, store, Arc::clone(&load))
            .context("failed to create the cache")?,
    );
    match changes {
        // A shared store's change feed opens by rebuilding the indexes from the store, so no
        // change made meanwhile by another gateway is missed. Serving starts once that is done,
        // or degraded (every request a miss until it is) when the store does not answer soon.
        Some(changes) => {
            let (filled, filled_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(sync::follow(Arc::clone(&cache), changes, filled));
            if !cache.store().ping().await {
                tracing::warn!("the store does not answer; serving uncached until it does");
            } else if tokio::time::timeout(STORE_SYNC_WAIT, filled_rx)
                .await
                .is_err()
            {
                tracing::warn!(
                    wait_s = STORE_SYNC_WAIT.as_secs(),
                    "the indexes are still being filled from the store; serving meanwhile"
                );
            }
        }
        None => {
            sync::load_from_store(&cache).await;
        }
    }

    let upstream = Upstream::new(&config.upstream, Arc::clone(&load))
        .context("failed to create the upstream client")?;
    // The engine starts before the gateway listens, so that the first request finds it ready.
    let engine = match config.engine.clone() {
        Some(settings) => Some(
            cachet_gateway::engine::supervise(settings, upstream.clone())
                .await
                .context("failed to start the bundled engine")?,
        ),
        None => None,
    };
    let state = AppState::new(Arc::clone(&cache), upstream, Some(metrics), Some(source));
    spawn_background(&state, snapshots.as_ref());

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin.as_ref().and_then(|admin| admin.listen) {
        Some(admin_addr) => Some(
            tokio::net::TcpListener::bind(admin_addr)
                .await
                .with_context(|| format!("failed to listen on {admin_addr} ([admin] listen)"))?,
        ),
        None => None,
    };
    // Streamed answers go out in small chunks: send each at once instead of waiting on Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "failed to set TCP_NODELAY");
        }
    });
    // `base_url` shows a password in the upstream URL as `***`.
    tracing::info!(%addr, upstream = %state.upstream.base_url(), store = cache.store().kind(), "cachet serving");
    if let Some(admin_listener) = admin_listener {
        let admin_addr = admin_listener.local_addr()?;
        println!("admin listening on http://{admin_addr}");
        let admin = axum::serve(admin_listener, admin_app(state.clone()))
            .with_graceful_shutdown(shutdown());
        tokio::spawn(async move {
            if let Err(e) = admin.await {
                tracing::error!(error = %e, "the admin listener failed");
            }
        });
    }
    println!("listening on http://{addr}");
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown())
        .await;
    if let Some(engine) = engine {
        engine.shutdown().await;
    }
    if let Some(snapshots) = snapshots {
        sync::snapshot(snapshots.store, snapshots.path).await;
    }
    served.context("server failed")
}

/// The gateway's periodic work: expiry, store probes, load sampling, config watching and
/// snapshots.
fn spawn_background(state: &AppState, snapshots: Option<&Snapshots>) {
    let cache = state.cache_handle();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            cache.purge_expired().await;
        }
    });
    let cache = state.cache_handle();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            cache.load().tick(std::time::Instant::now());
            // A shared store that comes back is resynchronised by its change feed.
            cache.store().probe().await;
        }
    });
    tokio::spawn(reload::watch(state.clone(), Duration::from_secs(1)));
    if let Some(snapshots) = snapshots {
        tokio::spawn(sync::snapshot_every(
            Arc::clone(&snapshots.store),
            snapshots.path.clone(),
            snapshots.interval,
        ));
    }
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}
