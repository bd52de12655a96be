//! The `cachet-engine` binary: `serve` an OpenAI-compatible API, or `bench` the engine in process.

mod bench;
mod loadgen;
mod probe;
mod sample_check;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use cachet_engine::backend::KvLayout;
use cachet_engine::checkpoint::ModelConfig;
use cachet_engine::engine::{EngineHandle, EngineSettings};
use cachet_engine::model::{self, Device};
use cachet_engine::server::{self, AppState, TenantPolicy};
use cachet_engine::text::TextCodec;

#[derive(Parser)]
#[command(
    name = "cachet-engine",
    version,
    about = "cachet's bundled inference engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a checkpoint over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Measure decode throughput and time to first token in process (build with --release).
    Bench(bench::BenchArgs),
    /// Run prompts straight through the model and write every generated token's logits
    /// (parity checks between backends and against transformers).
    Probe(probe::ProbeArgs),
    /// Output tokens/s, TTFT and time per output token of random prompts at several
    /// concurrency levels, through the real scheduler in process (one JSON line a level).
    Throughput(loadgen::ThroughputArgs),
    /// Groups of requests sharing a long system prompt, shuffled: TTFT and throughput
    /// (run it with and without --no-prefix-caching to see what the cache saves).
    PrefixBench(loadgen::PrefixBenchArgs),
    /// Checks the GPU sampling kernel against the host sampler on fixed logits.
    SampleCheck(sample_check::SampleCheckArgs),
}

/// What loading a model and sizing the engine needs; shared by `serve` and `bench`.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Hugging Face checkpoint folder: config.json, *.safetensors (f32, f16 or bf16),
    /// tokenizer.json and tokenizer_config.json (for the chat template).
    #[arg(long, env = "CACHET_ENGINE_MODEL")]
    model: PathBuf,
    /// Compute device: "cpu", or "cuda:N" for GPU N (bf16 weights, cuBLAS, kernels compiled
    /// at start with NVRTC and cached under ~/.cache/cachet-engine). A GPU that cannot be
    /// used (no driver, no libraries on the loader path, no such ordinal) is a start-up
    /// error; the engine never falls back to the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run every step eagerly on CUDA instead of replaying decode steps from captured
    /// CUDA graphs (for comparisons; graphs save the launch overhead of each kernel).
    #[arg(long)]
    no_cuda_graphs: bool,
    /// Number of KV-cache blocks to preallocate. Each holds --block-size tokens for every
    /// layer; the pool bounds how many tokens all running requests and the prefix cache
    /// hold together (SmolLM2-135M: about 0.7 MiB per 16-token block on the cpu, which keeps
    /// f32, half that on cuda, which keeps bf16).
    #[arg(long, default_value_t = 512)]
    kv_blocks: usize,
    /// Tokens per KV block, the unit of prefix caching: only full blocks are reused.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Most tokens computed in one step (decodes plus prefill chunks). Long prompts are
    /// split into chunks of what is left after the running decodes.
    #[arg(long, default_value_t = 512)]
    max_batch_tokens: usize,
    /// Most requests generating at once; others wait in the queue.
    #[arg(long, default_value_t = 64)]
    max_running_seqs: usize,
    /// Compute every prompt in full instead of reusing the KV of cached prefixes (for
    /// measuring what the prefix cache saves).
    #[arg(long)]
    no_prefix_caching: bool,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Model name reported by /v1/models and accepted in requests (default: the folder name).
    #[arg(long)]
    served_model_name: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on; port 0 picks a free one. The engine prints
    /// `listening on http://ADDR` on stdout once it accepts connections.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Take the tenant from the x-cachet-tenant header instead of the Authorization
    /// credential, as the cachet gateway that starts the engine does (it sends the tenant
    /// it derived, and strips any header a client sent). Refused unless --listen is a
    /// loopback address: any client that could reach the engine directly could otherwise
    /// claim another tenant's prefix cache.
    #[arg(long)]
    trust_gateway_header: bool,
}

/// Loads the checkpoint and starts the engine worker.
pub fn start_engine(args: &ModelArgs, show_progress: bool) -> anyhow::Result<EngineHandle> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("failed to set up the compute threads")?;
    }
    let mut device: Device = args.device.parse()?;
    if args.no_cuda_graphs {
        device = device.without_graphs();
    }
    let settings = EngineSettings {
        kv_blocks: args.kv_blocks,
        block_size: args.block_size,
        max_batch_tokens: args.max_batch_tokens,
        max_running_seqs: args.max_running_seqs,
        prefix_caching: !args.no_prefix_caching,
    };
    settings.validate()?;
    let dir: &Path = &args.model;
    let config = ModelConfig::from_dir(dir)
        .with_context(|| format!("failed to read the model config in {}", dir.display()))?;
    let codec = Arc::new(TextCodec::from_dir(dir)?);
    let kv = KvLayout {
        n_blocks: args.kv_blocks,
        block_size: args.block_size,
    };
    let started = std::time::Instant::now();
    let model = model::load(dir, &config, &device, kv, show_progress)
        .with_context(|| format!("failed to load the model in {}", dir.display()))?;
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    tracing::info!(
        model = %name,
        architecture = ?config.architecture,
        load_ms = started.elapsed().as_millis() as u64,
        kv_blocks = args.kv_blocks,
        block_size = args.block_size,
        "model loaded"
    );
    Ok(EngineHandle::start(model, codec, &config, name, settings)?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.trust_gateway_header && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--trust-gateway-header needs a loopback --listen address, not {}: a client that \
             reaches the engine directly could name any tenant in x-cachet-tenant",
            args.listen
        );
    }
    let metrics = server::metrics_handle();
    let engine = start_engine(&args.model, true)?;
    let state = AppState {
        engine,
        tenants: TenantPolicy {
            trust_gateway_header: args.trust_gateway_header,
        },
        metrics,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // Supervisors (the gateway, tests) wait for this exact line on stdout.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    axum::serve(listener, server::app(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Probe(args) => probe::run(args),
        Command::Throughput(args) => runtime.block_on(loadgen::throughput(args)),
        Command::PrefixBench(args) => runtime.block_on(loadgen::prefix_bench(args)),
        Command::SampleCheck(args) => sample_check::run(args),
    }
}
