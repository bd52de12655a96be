//! Shadow checks: a share of each category's semantic hits (`shadow_rate`) is also sent
//! upstream in the background while the cached answer is served at once. The fresh answer is
//! compared with the cached one (cosine similarity of the two answers' embeddings against
//! `[shadow] agreement`), and the category's wrong-answer rate is estimated over its most recent
//! checks with one-sided confidence bounds. When the lower bound passes the category's
//! `max_wrong_rate` (the rate is above the budget with the configured confidence: an upper
//! bound would pass any small budget after a handful of checks, even with none wrong), the
//! category's budget is halved (a stricter threshold from the same
//! calibration data), the reason is logged and the estimate starts afresh.
//!
//! What is estimated is the share of shadow-checked semantic hits whose fresh answer disagrees:
//! sampling varies answers too, so it over-counts wrong answers and tightens on the safe side.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use cachet_policies::{lower_bound, upper_bound};
use futures::StreamExt;
use parking_lot::Mutex;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use crate::answer;
use crate::cache::{Cache, dot};
use crate::request::Route;
use crate::upstream::Upstream;

/// The estimate of one category's wrong-answer rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Shadow checks in the window.
    pub samples: usize,
    /// Of which the fresh answer disagreed with the cached one.
    pub disagreed: usize,
    pub rate: f64,
    /// One-sided confidence bounds of the rate.
    pub lower_bound: f64,
    pub upper_bound: f64,
    /// Checks made since the gateway started (all windows).
    pub total_checks: u64,
}

#[derive(Debug, Default)]
struct Window {
    outcomes: VecDeque<bool>,
    total_checks: u64,
}

/// The shadow checks of all categories.
#[derive(Debug, Default)]
pub struct Shadows {
    windows: Mutex<HashMap<String, Window>>,
    in_flight: AtomicUsize,
}

/// What a shadow check needs of the request that hit.
#[derive(Debug, Clone)]
pub struct ShadowRequest {
    pub category: String,
    pub route: Route,
    pub stream: bool,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The tenant the gateway derived, sent to an upstream that trusts it (the bundled engine).
    pub tenant: String,
    /// The cached answer that was served, in its non-streamed shape.
    pub cached: Value,
}

/// Releases the in-flight slot however the check ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shadows {
    /// Whether this hit of `category` is to be checked: drawn at its `shadow_rate`, and only
    /// while fewer than `[shadow] max_in_flight` checks run.
    pub fn draw(&self, cache: &Cache, category: &str) -> bool {
        let config = cache.config();
        let Some(rate) = config.category(category).map(|c| c.shadow_rate) else {
            return false;
        };
        rate > 0.0
            && rand::rng().random_bool(rate.min(1.0))
            && self.in_flight.load(Ordering::Acquire) < config.shadow.max_in_flight
    }

    /// Checks one hit in the background.
    pub fn spawn(self: &Arc<Self>, cache: Arc<Cache>, upstream: Upstream, request: ShadowRequest) {
        let shadows = Arc::clone(self);
        shadows.in_flight.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("cachet_shadow_checks_started_total", "category" => request.category.clone())
            .increment(1);
        tokio::spawn(async move {
            let _slot = Slot(&shadows.in_flight);
            let category = request.category.clone();
            match fresh_answer(&upstream, &request).await {
                Some(fresh) => match agreement(&cache, &request.cached, &fresh).await {
                    Some(similarity) => shadows.record(&cache, &category, similarity),
                    None => tracing::debug!(category, "shadow check: answers not comparable"),
                },
                None => tracing::debug!(category, "shadow check: no complete upstream answer"),
            }
        });
    }

    /// Adds one comparison to the category's window and tightens the category when the bound
    /// passes its budget.
    fn record(&self, cache: &Cache, category: &str, similarity: f32) {
        let config = cache.config();
        let settings = config.shadow;
        let wrong = similarity < settings.agreement;
        let estimate = {
            let mut windows = self.windows.lock();
            let window = windows.entry(category.to_owned()).or_default();
            window.outcomes.push_back(wrong);
            window.total_checks += 1;
            while window.outcomes.len() > settings.window {
                window.outcomes.pop_front();
            }
            estimate(window, confidence(cache))
        };
        metrics::counter!("cachet_shadow_checks_total", "category" => category.to_owned(),
            "outcome" => if wrong { "disagreed" } else { "agreed" })
        .increment(1);
        metrics::gauge!("cachet_estimated_wrong_rate", "category" => category.to_owned())
            .set(estimate.rate);
        metrics::gauge!("cachet_estimated_wrong_rate_lower_bound", "category" => category.to_owned())
            .set(estimate.lower_bound);
        metrics::gauge!("cachet_estimated_wrong_rate_upper_bound", "category" => category.to_owned())
            .set(estimate.upper_bound);
        tracing::debug!(category, similarity, wrong, ?estimate, "shadow check");
        let policy = cache.policy();
        let state = cache.load().state();
        let Some(budget) = config.category(category).and_then(|c| c.budget) else {
            return;
        };
        let allowed = policy
            .points(category)
            .and_then(|p| match state {
                cachet_policies::LoadState::Normal => p.normal.budget,
                cachet_policies::LoadState::Relaxed => p.relaxed.budget,
            })
            .unwrap_or(budget.max_wrong_rate);
        if estimate.samples < settings.min_samples || estimate.lower_bound <= allowed {
            return;
        }
        let Some(tighter) = policy.tightened(category) else {
            return;
        };
        let next = tighter.points(category).map(|p| p.normal.point);
        tracing::warn!(
            category,
            disagreed = estimate.disagreed,
            samples = estimate.samples,
            lower_bound = estimate.lower_bound,
            allowed,
            next = ?next,
            "shadow checks put the wrong-answer rate above the category's budget: tightening its threshold"
        );
        metrics::counter!("cachet_shadow_tightenings_total", "category" => category.to_owned())
            .increment(1);
        cache.replace_policy(tighter);
        // The old estimate describes the old operating point.
        if let Some(window) = self.windows.lock().get_mut(category) {
            window.outcomes.clear();
        }
    }

    /// Every category's current estimate.
    pub fn estimates(&self, cache: &Cache) -> HashMap<String, Estimate> {
        let confidence = confidence(cache);
        self.windows
            .lock()
            .iter()
            .map(|(name, window)| (name.clone(), estimate(window, confidence)))
            .collect()
    }
}

fn confidence(cache: &Cache) -> f64 {
    cache.config().calibration.confidence
}

fn estimate(window: &Window, confidence: f64) -> Estimate {
    let samples = window.outcomes.len();
    let disagreed = window.outcomes.iter().filter(|w| **w).count();
    Estimate {
        samples,
        disagreed,
        rate: if samples == 0 {
            0.0
        } else {
            disagreed as f64 / samples as f64
        },
        lower_bound: lower_bound(disagreed, samples, confidence),
        upper_bound: upper_bound(disagreed, samples, confidence),
        total_checks: window.total_checks,
    }
}

/// The upstream's answer to the same request, assembled, or `None` when it fails.
async fn fresh_answer(upstream: &Upstream, request: &ShadowRequest) -> Option<Value> {
    let response = upstream
        .send(
            Method::POST,
            request.route.upstream_path(),
            &request.headers,
            request.body.clone(),
            &request.tenant,
        )
        .await
        .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.ok()?);
    }
    answer::assemble(request.route, request.stream, &body)
}

/// Cosine similarity of the two answers' texts' embeddings.
async fn agreement(cache: &Cache, cached: &Value, fresh: &Value) -> Option<f32> {
    let (a, b) = (answer_text(cached)?, answer_text(fresh)?);
    if a == b {
        return Some(1.0);
    }
    let vectors = cache.embedder().embed_many(vec![a, b]).await.ok()?;
    Some(dot(&vectors[0], &vectors[1]))
}

/// The first choice's text of a chat or completion answer.
fn answer_text(response: &Value) -> Option<String> {
    let choice = response.get("choices")?.get(0)?;
    choice
        .get("message")
        .and_then(|m| m.get("content"))
        .or_else(|| choice.get("text"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_text_reads_chat_and_completion_answers() {
        let chat = serde_json::json!({"choices": [{"message": {"content": "Paris"}}]});
        let completion = serde_json::json!({"choices": [{"text": "Lyon"}]});
        assert_eq!(answer_text(&chat).as_deref(), Some("Paris"));
        assert_eq!(answer_text(&completion).as_deref(), Some("Lyon"));
        assert_eq!(answer_text(&serde_json::json!({"choices": []})), None);
    }

    #[test]
    fn the_estimate_bounds_the_window() {
        let mut window = Window::default();
        window.outcomes.extend([true, false, false, false]);
        let e = estimate(&window, 0.95);
        assert_eq!((e.samples, e.disagreed), (4, 1));
        assert!((e.rate - 0.25).abs() < 1e-9);
        assert!(e.upper_bound > 0.25 && e.upper_bound < 1.0);
        assert_eq!(estimate(&Window::default(), 0.95).upper_bound, 1.0);
    }
}
