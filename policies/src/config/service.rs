//! The gateway's own plumbing: where it listens, its upstream, the bundled engine, the
//! embedder and the index's graph parameters. All of these take effect at start-up.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::checker::Checker;
use crate::raw::{RawEmbedder, RawEngine, RawIndex, RawServer, RawUpstream};

/// Where the embedding model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(u32),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        if let Some(ordinal) = s.strip_prefix("cuda:")
            && let Ok(ordinal) = ordinal.parse()
        {
            return Ok(Self::Cuda(ordinal));
        }
        Err(format!(
            "{s:?} is not a device (expected \"cpu\" or \"cuda:N\")"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Base URL, ending without a slash (`http://host:8000/v1`).
    pub url: url::Url,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// How the gateway starts and supervises the bundled `cachet-engine` as its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// The engine executable; `None` means `cachet-engine` beside the `cachet` executable.
    pub binary: Option<PathBuf>,
    /// Hugging Face checkpoint directory to serve.
    pub model: PathBuf,
    /// `cpu` or `cuda:N`, passed to the engine.
    pub device: String,
    /// Extra flags for `cachet-engine serve`.
    pub args: Vec<String>,
    /// How long the engine may take to load and start listening.
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderSettings {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    pub onnxruntime: PathBuf,
    pub device: DeviceSpec,
    pub max_tokens: NonZeroUsize,
    pub max_batch: NonZeroUsize,
    pub batch_wait: Duration,
    /// ONNX Runtime intra-op threads; 0 lets the embedder choose (half the cores on the CPU).
    pub threads: usize,
    /// The most texts one model run takes; unset chooses by device (one on the CPU, so that a
    /// text's vector does not depend on what it is batched with; no limit on a GPU).
    pub rows_per_run: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSettings {
    /// Links per graph node; fixed when a graph is built.
    pub m: NonZeroUsize,
    /// Build-time beam width; fixed when a graph is built.
    pub ef_construction: NonZeroUsize,
    /// Search-time beam width; may change on a running index.
    pub ef_search: NonZeroUsize,
    /// Nearest neighbours fetched per semantic lookup.
    pub candidates: NonZeroUsize,
}

impl IndexSettings {
    /// True when the graphs would have to be rebuilt to take the new settings.
    pub fn graph_differs(&self, new: &IndexSettings) -> bool {
        self.m != new.m || self.ef_construction != new.ef_construction
    }
}

pub(super) fn server(c: &mut Checker, raw: &RawServer) -> ServerSettings {
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen_text.parse().unwrap_or_else(|_| {
        c.report(
            "server.listen",
            format!("{listen_text:?} is not an address like \"127.0.0.1:8080\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    ServerSettings {
        listen,
        max_body_bytes: c
            .positive("server.max_body_bytes", raw.max_body_bytes, 4 << 20)
            .get(),
        request_timeout: c.duration(
            "server.request_timeout",
            raw.request_timeout.as_deref(),
            "10m",
        ),
    }
}

/// `None` when the URL is not valid (a problem is reported).
pub(super) fn upstream(c: &mut Checker, raw: &RawUpstream) -> Option<UpstreamSettings> {
    let url_text = raw.url.as_deref().unwrap_or("http://127.0.0.1:8000/v1");
    let url = parse_base_url(url_text)
        .map_err(|message| c.report("upstream.url", message))
        .ok();
    let connect_timeout = c.duration(
        "upstream.connect_timeout",
        raw.connect_timeout.as_deref(),
        "5s",
    );
    let timeout = c.duration("upstream.timeout", raw.timeout.as_deref(), "10m");
    Some(UpstreamSettings {
        url: url?,
        connect_timeout,
        timeout,
    })
}

pub(super) fn engine(c: &mut Checker, raw: &RawEngine) -> EngineSettings {
    let device = raw.device.clone().unwrap_or_else(|| "cpu".to_owned());
    if let Err(message) = device.parse::<DeviceSpec>() {
        c.report("engine.device", message);
    }
    EngineSettings {
        binary: raw.binary.as_ref().map(PathBuf::from),
        model: path_or(&raw.model, "assets/smollm2-135m"),
        device,
        args: raw.args.clone(),
        startup_timeout: c.duration(
            "engine.startup_timeout",
            raw.startup_timeout.as_deref(),
            "5m",
        ),
    }
}

pub(super) fn embedder(c: &mut Checker, e: &RawEmbedder) -> EmbedderSettings {
    let device_text = e.device.as_deref().unwrap_or("cpu");
    let device = device_text.parse().unwrap_or_else(|message: String| {
        c.report("embedder.device", message);
        DeviceSpec::Cpu
    });
    EmbedderSettings {
        model: path_or(&e.model, "assets/minilm-q8/model.onnx"),
        tokenizer: path_or(&e.tokenizer, "assets/minilm-q8/tokenizer.json"),
        onnxruntime: path_or(
            &e.onnxruntime,
            "assets/onnxruntime/libonnxruntime.so.1.32.0",
        ),
        device,
        max_tokens: c.positive("embedder.max_tokens", e.max_tokens, 256),
        max_batch: c.positive("embedder.max_batch", e.max_batch, 32),
        batch_wait: c.duration("embedder.batch_wait", e.batch_wait.as_deref(), "0ms"),
        threads: c.non_negative("embedder.threads", e.threads, 0),
        rows_per_run: e
            .rows_per_run
            .map(|rows| c.positive("embedder.rows_per_run", Some(rows), 1)),
    }
}

pub(super) fn index(c: &mut Checker, i: &RawIndex) -> IndexSettings {
    let m = c.positive("index.m", i.m, 16);
    if m.get() > 256 {
        c.report("index.m", format!("{m} is above the maximum of 256"));
    }
    IndexSettings {
        m,
        ef_construction: c.positive("index.ef_construction", i.ef_construction, 200),
        ef_search: c.positive("index.ef_search", i.ef_search, 64),
        candidates: c.positive("index.candidates", i.candidates, 4),
    }
}

fn path_or(value: &Option<String>, default: &str) -> PathBuf {
    PathBuf::from(value.as_deref().unwrap_or(default))
}

fn parse_base_url(text: &str) -> std::result::Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must be an http:// or https:// url"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    // Keep the base without a trailing slash so that routes append cleanly.
    let trimmed = text.trim_end_matches('/');
    url::Url::parse(trimmed).map_err(|e| format!("{text:?} is not a url: {e}"))
}
