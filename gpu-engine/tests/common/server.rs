//! Starting an engine server in process, and talking to it over HTTP.

use std::path::Path;
use std::sync::Arc;

use cachet_engine::backend::KvLayout;
use cachet_engine::checkpoint::ModelConfig;
use cachet_engine::engine::{EngineHandle, EngineSettings};
use cachet_engine::model::{self, Device};
use cachet_engine::server::{self, AppState, TenantPolicy};
use cachet_engine::text::TextCodec;
use serde_json::Value;

/// A running server: its base URL and the engine behind it.
pub struct TestServer {
    pub url: String,
    pub engine: EngineHandle,
    pub client: reqwest::Client,
}

pub fn settings(kv_blocks: usize) -> EngineSettings {
    EngineSettings {
        kv_blocks,
        block_size: 16,
        max_batch_tokens: 256,
        max_running_seqs: 32,
        prefix_caching: true,
    }
}

/// Loads `dir` and serves it on 127.0.0.1:0 from the current tokio runtime.
pub async fn start(dir: &Path, settings: EngineSettings, tenants: TenantPolicy) -> TestServer {
    let config = ModelConfig::from_dir(dir).unwrap();
    let codec = Arc::new(TextCodec::from_dir(dir).unwrap());
    let kv = KvLayout {
        n_blocks: settings.kv_blocks,
        block_size: settings.block_size,
    };
    let model = model::load(dir, &config, &Device::Cpu, kv, false).unwrap();
    let engine = EngineHandle::start(model, codec, &config, "test-model".into(), settings).unwrap();
    let state = AppState {
        engine: engine.clone(),
        tenants,
        metrics: server::metrics_handle(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server::app(state)).await });
    TestServer {
        url,
        engine,
        client: reqwest::Client::new(),
    }
}

impl TestServer {
    /// POSTs JSON with an optional bearer key; returns status and body.
    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// POSTs a streaming request and returns the `data:` payloads, `[DONE]` included.
    pub async fn post_stream(&self, path: &str, key: Option<&str>, body: Value) -> Vec<String> {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let text = response.text().await.unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until no request is running or waiting and returns (free, total) blocks.
    pub async fn settled_blocks(&self) -> (usize, usize) {
        for _ in 0..200 {
            let stats = self.engine.stats().await.unwrap();
            if stats.n_running == 0 && stats.n_waiting == 0 {
                return (stats.kv_blocks_free, stats.kv_blocks_total);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the engine did not settle");
    }
}

/// Joins the text of streamed chunks (chat deltas or completion texts).
pub fn streamed_text(chunks: &[String]) -> String {
    chunks
        .iter()
        .filter(|c| c.as_str() != "[DONE]")
        .map(|c| serde_json::from_str::<Value>(c).unwrap())
        .filter_map(|v| {
            let choice = v["choices"].get(0)?.clone();
            choice["text"]
                .as_str()
                .or(choice["delta"]["content"].as_str())
                .map(str::to_owned)
        })
        .collect()
}
