//! The client for the OpenAI-compatible upstream that answers cache misses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
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

/// Response headers that belong to the one request that reached the upstream: its session
/// cookies, its key's rate-limit state, its account and request ids. Flights never join two
/// tenants, but one API key often serves many end users, so a coalesced follower never
/// receives them either (and a cache hit never replays any upstream header at all).
/// `retry-after` stays: a follower shares the leader's key, so its error's advice holds.
const PER_CALLER_RESPONSE_HEADERS: [&str; 7] = [
    "set-cookie",
    "set-cookie2",
    "www-authenticate",
    "openai-organization",
    "openai-project",
    "x-request-id",
    "ratelimit",
];

/// Header prefixes of the same kind: `x-ratelimit-*` (OpenAI's), `ratelimit-*` (the IETF
/// draft's), `anthropic-ratelimit-*`.
const PER_CALLER_RESPONSE_PREFIXES: [&str; 3] =
    ["x-ratelimit-", "ratelimit-", "anthropic-ratelimit-"];

/// The header the bundled engine salts its prefix cache with (`--trust-gateway-header`).
pub const TENANT_HEADER: &str = "x-cachet-tenant";

#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    /// Changes when a supervised engine restarts on a new port.
    base: Arc<RwLock<String>>,
    load: Arc<LoadTracker>,
    /// Whether requests carry the caller's tenant in [`TENANT_HEADER`]: only for the bundled
    /// engine, which trusts it; any other upstream never learns the tenant digest.
    send_tenant: Arc<AtomicBool>,
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
            // A redirect is the upstream's answer, passed to the client as it is: following
            // it would send the client's key wherever the upstream points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            base: Arc::new(RwLock::new(
                settings.url.as_str().trim_end_matches('/').to_owned(),
            )),
            load,
            send_tenant: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The base URL, credentials included: for sending requests only.
    fn base_url_with_credentials(&self) -> String {
        self.base.read().clone()
    }

    /// The base URL as it may be shown (in `/healthz`, in logs): a user or password in it
    /// reads `***`.
    pub fn base_url(&self) -> String {
        redact(&self.base.read())
    }

    /// Sends the caller's tenant with every request from now on (the upstream is the bundled
    /// engine, started with `--trust-gateway-header`).
    pub fn send_tenant_header(&self) {
        self.send_tenant.store(true, Ordering::Relaxed);
    }

    pub fn set_base_url(&self, url: String) {
        *self.base.write() = url;
    }

    /// Sends a request to `{base}{path}` with the client's headers, and `tenant` (who asks)
    /// when the upstream is the bundled engine.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        tenant: &str,
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
        if self.send_tenant.load(Ordering::Relaxed)
            && let Ok(value) = HeaderValue::from_str(tenant)
        {
            forwarded.insert(TENANT_HEADER, value);
        }
        let started = std::time::Instant::now();
        let waiting = self.load.start();
        let result = self
            .client
            .request(
                method,
                format!("{}{path}", self.base_url_with_credentials()),
            )
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
            // The error's message quotes its URL, which would bring a password to the log.
            let e = match url::Url::parse(&format!("{}{path}", self.base_url())) {
                Ok(shown) => e.with_url(shown),
                Err(_) => e.without_url(),
            };
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

/// Removes what belongs to another caller from headers a coalesced follower answers with.
pub fn strip_per_caller(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            PER_CALLER_RESPONSE_HEADERS.contains(&name)
                || PER_CALLER_RESPONSE_PREFIXES
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        })
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// `url` with its user and password, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("***");
            parsed.as_str().trim_end_matches('/').to_owned()
        }
        Ok(_) => url.to_owned(),
        // Not a URL: nothing can be told apart in it, so nothing of it is shown.
        Err(_) => "***".to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("http://user:pa55@10.0.0.1:8000/v1"),
            "http://***@10.0.0.1:8000/v1"
        );
        assert_eq!(redact("https://:tok@h/v1"), "https://***@h/v1");
        assert_eq!(
            redact("http://127.0.0.1:8000/v1"),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(redact("not a url with pa55"), "***");
    }

    #[test]
    fn per_caller_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("set-cookie", "session=a"),
            ("x-ratelimit-remaining-requests", "9"),
            ("ratelimit-policy", "10;w=60"),
            ("openai-organization", "org-a"),
            ("content-type", "application/json"),
            ("openai-processing-ms", "12"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_per_caller(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "openai-processing-ms"]);
    }
}
