//! Open-loop load: requests leave on a fixed schedule whether or not earlier ones have
//! finished, and each latency is measured from its scheduled send time, so a slow server
//! cannot hide its queueing by slowing the client down (coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use tokio::time::Instant;

/// One chat completion request to send.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The full `/chat/completions` URL.
    pub url: Arc<str>,
    /// The bearer key; the gateway partitions its cache by it.
    pub api_key: &'static str,
    pub question: String,
    pub stream: bool,
}

impl ChatRequest {
    fn body(&self) -> String {
        let mut body = serde_json::json!({
            "model": "test-model",
            "messages": [{"role": "user", "content": self.question}],
        });
        if self.stream {
            body["stream"] = serde_json::Value::Bool(true);
        }
        body.to_string()
    }

    /// Sends the request and reads the whole answer; every time is counted from `scheduled`.
    pub async fn send(self, client: &Client, scheduled: Instant, timeout: Duration) -> Sample {
        let send_lag = scheduled.elapsed();
        let result = tokio::time::timeout(timeout, self.exchange(client, scheduled)).await;
        let (first_byte, cache, error) = match result {
            Ok(Ok((first_byte, cache))) => (first_byte, cache, None),
            Ok(Err(error)) => (Duration::ZERO, String::new(), Some(error)),
            Err(_) => (
                Duration::ZERO,
                String::new(),
                Some(format!("no complete answer within {timeout:?}")),
            ),
        };
        Sample {
            latency: scheduled.elapsed(),
            first_byte,
            send_lag,
            cache,
            error,
        }
    }

    async fn exchange(
        &self,
        client: &Client,
        scheduled: Instant,
    ) -> Result<(Duration, String), String> {
        let response = client
            .post(&*self.url)
            .bearer_auth(self.api_key)
            .header("content-type", "application/json")
            .body(self.body())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let cache = response
            .headers()
            .get("x-cachet-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let mut response = response;
        let mut body = Vec::new();
        let mut first_byte = None;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("body broke off: {e}"))?
        {
            first_byte.get_or_insert_with(|| scheduled.elapsed());
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        // A stream that lacks its terminator was cut, however fast it was.
        if self.stream && !body.trim_ascii_end().ends_with(b"data: [DONE]") {
            return Err("stream ended without data: [DONE]".to_owned());
        }
        Ok((first_byte.unwrap_or_else(|| scheduled.elapsed()), cache))
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Scheduled send time to the last byte of the answer.
    pub latency: Duration,
    /// Scheduled send time to the first byte of the body.
    pub first_byte: Duration,
    /// How late the client sent the request; large values mean the client could not keep up.
    pub send_lag: Duration,
    /// The `x-cachet-cache` header, `none` where absent (the direct upstream).
    pub cache: String,
    pub error: Option<String>,
}

/// Sends `requests` at `rate_per_s`, each on its own task, and waits for all of them.
pub async fn open_loop(
    client: &Client,
    requests: Vec<ChatRequest>,
    rate_per_s: f64,
    timeout: Duration,
) -> Vec<Sample> {
    let interval = Duration::from_secs_f64(1.0 / rate_per_s);
    // A short head start so the first request is not already late when the loop begins.
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            request.send(&client, scheduled, timeout).await
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.unwrap_or_else(|e| Sample {
            latency: Duration::ZERO,
            first_byte: Duration::ZERO,
            send_lag: Duration::ZERO,
            cache: String::new(),
            error: Some(format!("request task failed: {e}")),
        }));
    }
    samples
}

/// Sends `requests` one after another (warm-up, filling the cache, probing); returns the
/// samples in order.
pub async fn one_by_one(
    client: &Client,
    requests: Vec<ChatRequest>,
    timeout: Duration,
) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(requests.len());
    for request in requests {
        samples.push(request.send(client, Instant::now(), timeout).await);
    }
    samples
}

/// Latency quantiles of one scenario, in milliseconds, over the requests that succeeded.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_byte_p50_ms: f64,
    pub first_byte_p99_ms: f64,
    pub send_lag_p99_ms: f64,
    /// Requests per `x-cachet-cache` value.
    pub cache: BTreeMap<String, usize>,
    /// The first error seen, to say why requests failed.
    pub first_error: Option<String>,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> Self {
        let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
        let quantiles = |pick: fn(&Sample) -> Duration| {
            let mut values: Vec<f64> = ok.iter().map(|s| pick(s).as_secs_f64() * 1e3).collect();
            values.sort_by(f64::total_cmp);
            (
                quantile(&values, 0.50),
                quantile(&values, 0.99),
                values.last().copied().unwrap_or(0.0),
            )
        };
        let (p50_ms, p99_ms, max_ms) = quantiles(|s| s.latency);
        let (first_byte_p50_ms, first_byte_p99_ms, _) = quantiles(|s| s.first_byte);
        let (_, send_lag_p99_ms, _) = quantiles(|s| s.send_lag);
        let mut cache = BTreeMap::new();
        for sample in &ok {
            *cache.entry(sample.cache.clone()).or_insert(0) += 1;
        }
        Self {
            requests: samples.len(),
            errors: samples.len() - ok.len(),
            p50_ms,
            p99_ms,
            max_ms,
            first_byte_p50_ms,
            first_byte_p99_ms,
            send_lag_p99_ms,
            cache,
            first_error: samples.iter().find_map(|s| s.error.clone()),
        }
    }
}

/// The nearest-rank quantile of sorted `values` (0 for none).
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, cache: &str, error: Option<&str>) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            first_byte: Duration::from_millis(ms / 2),
            send_lag: Duration::ZERO,
            cache: cache.to_owned(),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.50), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn summary_counts_errors_apart_and_cache_labels() {
        let samples = [
            sample(10, "miss", None),
            sample(20, "hit-exact", None),
            sample(30, "hit-exact", None),
            sample(5000, "", Some("status 502")),
        ];
        let summary = Summary::of(&samples);
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.max_ms, 30.0);
        assert_eq!(summary.p50_ms, 20.0);
        assert_eq!(summary.cache["hit-exact"], 2);
        assert_eq!(summary.cache["miss"], 1);
        assert_eq!(summary.first_error.as_deref(), Some("status 502"));
    }
}
