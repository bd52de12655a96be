//! The `cachet` binary: `cachet serve` runs the gateway; `cachet check-config` validates a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use cachet_embedder::Embedder;
use cachet_gateway::cache::Cache;
use cachet_gateway::eval::embedder_config;
use cachet_gateway::upstream::Upstream;
use cachet_gateway::{AppState, app};
use cachet_policies::Config;
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
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
        } => {
            let config = load_config(&config, listen, upstream)?;
            tokio::runtime::Runtime::new()?.block_on(serve(config))
        }
        Command::Eval(args) => {
            print!("{}", cachet_gateway::eval::run(&args)?);
            Ok(())
        }
        Command::CheckConfig { config } => {
            load_config(&config, None, None)?;
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}

fn load_config(
    path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    upstream: Option<String>,
) -> anyhow::Result<Config> {
    let mut config =
        Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let Some(url) = upstream {
        // An explicit upstream replaces the bundled engine.
        config.engine = None;
        config.upstream.url = url::Url::parse(url.trim_end_matches('/'))
            .with_context(|| format!("--upstream {url:?} is not a url"))?;
    }
    Ok(config)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let embedder_config = embedder_config(&config);
    let embedder = tokio::task::spawn_blocking(move || Embedder::start(embedder_config))
        .await?
        .context("failed to start the embedder")?;
    let cache = Cache::new(Arc::clone(&config), embedder).context("failed to create the cache")?;
    let upstream =
        Upstream::new(&config.upstream).context("failed to create the upstream client")?;
    // The engine starts before the gateway listens, so that the first request finds it ready.
    let engine = match config.engine.clone() {
        Some(settings) => Some(
            cachet_gateway::engine::supervise(settings, upstream.clone())
                .await
                .context("failed to start the bundled engine")?,
        ),
        None => None,
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("failed to install the metrics recorder")?;
    let state = AppState::new(cache, upstream, Some(metrics));

    let cache = state.cache_handle();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            cache.purge_expired();
        }
    });

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    // Streamed answers go out in small chunks: send each at once instead of waiting on Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "failed to set TCP_NODELAY");
        }
    });
    tracing::info!(%addr, upstream = %state.upstream.base_url(), "cachet serving");
    println!("listening on http://{addr}");
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown())
        .await;
    if let Some(engine) = engine {
        engine.shutdown().await;
    }
    served.context("server failed")
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
