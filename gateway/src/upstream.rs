//! The client for the OpenAI-compatible upstream that answers cache misses.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, Response, StatusCode, header};
use bytes::Bytes;
use cachet_policies::UpstreamSettings;
use futures::StreamExt;
use parking_lot::RwLock;

use crate::flight::UpstreamFailure;
use crate::load::LoadTracker;

/// Request headers that are not forwarded: hop-by-hop ones, ones the client sets anew, and
/// `accept-encoding`, so that the upstream answers uncompressed and answers can be cached.
const DROPPED_REQUEST_HEADERS: [HeaderName; 10] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::ACCEPT_ENCODING,
    header::PROXY_AUTHORIZATION,
    header::CACHE_CONTROL,
];

/// Response headers not passed back: hop-by-hop ones and the length of a body that is re-streamed.
const DROPPED_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::TRAILER,
    header::UPGRADE,
];

#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    /// Changes when a supervised engine restarts on a new port.
    base: Arc<RwLock<String>>,
    load: Arc<LoadTracker>,
}

impl Upstream {
    pub fn new(
        settings: &UpstreamSettings,
        load: Arc<LoadTracker>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            base: Arc::new(RwLock::new(
                settings.url.as_str().trim_end_matches('/').to_owned(),
            )),
            load,
        })
    }

    pub fn base_url(&self) -> String {
        self.base.read().clone()
    }

    pub fn set_base_url(&self, url: String) {
        *self.base.write() = url;
    }

    /// Sends a request to `{base}{path}` with the client's headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        let mut forwarded = headers.clone();
        for name in &DROPPED_REQUEST_HEADERS {
            forwarded.remove(name);
        }
        let cachet_headers: Vec<HeaderName> = forwarded
            .keys()
            .filter(|k| k.as_str().starts_with("x-cachet-"))
            .cloned()
            .collect();
        for name in cachet_headers {
            forwarded.remove(name);
        }
        let started = std::time::Instant::now();
        let waiting = self.load.start();
        let result = self
            .client
            .request(method, format!("{}{path}", self.base_url()))
            .headers(forwarded)
            .body(body)
            .send()
            .await;
        metrics::histogram!("cachet_upstream_headers_seconds")
            .record(started.elapsed().as_secs_f64());
        let overloaded = result.as_ref().map_or(true, |response| {
            matches!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
        });
        waiting.finish(overloaded);
        result.map_err(|e| {
            metrics::counter!("cachet_upstream_errors_total").increment(1);
            if e.is_timeout() {
                UpstreamFailure::Timeout(Arc::new(e))
            } else {
                UpstreamFailure::Unavailable(Arc::new(e))
            }
        })
    }
}

/// The upstream's response headers, less hop-by-hop ones and the length of a re-streamed body.
pub fn response_headers(response: &reqwest::Response) -> HeaderMap {
    let mut headers = response.headers().clone();
    for name in &DROPPED_RESPONSE_HEADERS {
        headers.remove(name);
    }
    headers
}

/// The upstream's response passed through as it arrives.
pub fn relay(response: reqwest::Response) -> Response<Body> {
    let status = response.status();
    let headers = response_headers(&response);
    let mut out = Response::new(Body::from_stream(response.bytes_stream().boxed()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
