//! The admin API: invalidation, config reload and statistics, behind a bearer token.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::now_ms;
use crate::error::ApiError;
use crate::keys::Tenant;
use crate::reload::reload;
use crate::state::AppState;

/// Lets a request through only with the configured admin token. Answers are JSON that a
/// browser must not sniff into HTML (`nosniff`): what they hold can be text a tenant wrote.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = state.cache().config();
    let Some(admin) = config.admin.as_ref() else {
        return Err(ApiError::AdminDisabled);
    };
    // `accepts` compares in constant time: the answer's timing says nothing about the token.
    if !bearer(request.headers()).is_some_and(|token| admin.accepts(token)) {
        return Err(ApiError::Unauthorized);
    }
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Which entries to delete: every condition given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invalidation {
    /// Entry id as in the `x-cachet-entry` header (16 hex digits).
    pub id: Option<String>,
    pub category: Option<String>,
    /// The tenant of this API key.
    pub api_key: Option<String>,
    /// Case-insensitive substring of the cached question.
    pub question_contains: Option<String>,
    /// Regular expression over the cached question.
    pub question_regex: Option<String>,
}

/// The conditions, checked and compiled.
struct Filter {
    id: Option<u64>,
    category: Option<String>,
    tenant: Option<String>,
    contains: Option<String>,
    regex: Option<Regex>,
}

impl Filter {
    fn new(request: Invalidation) -> Result<Self, ApiError> {
        let id = match &request.id {
            Some(text) => Some(u64::from_str_radix(text, 16).map_err(|_| {
                ApiError::invalid(
                    format!("{text:?} is not an entry id (16 hex digits)"),
                    Some("id"),
                )
            })?),
            None => None,
        };
        let regex = match &request.question_regex {
            Some(pattern) => Some(Regex::new(pattern).map_err(|e| {
                ApiError::invalid(
                    format!("{pattern:?} is not a regular expression: {e}"),
                    Some("question_regex"),
                )
            })?),
            None => None,
        };
        let filter = Self {
            id,
            category: request.category,
            tenant: request
                .api_key
                .as_deref()
                .map(|key| Tenant::from_api_key(key).as_str().to_owned()),
            contains: request.question_contains.map(|s| s.to_lowercase()),
            regex,
        };
        let empty = filter.id.is_none()
            && filter.category.is_none()
            && filter.tenant.is_none()
            && filter.contains.is_none()
            && filter.regex.is_none();
        if empty {
            return Err(ApiError::invalid(
                "name at least one of id, category, api_key, question_contains, question_regex",
                None,
            ));
        }
        Ok(filter)
    }

    fn matches(&self, meta: &cachet_index::EntryMeta) -> bool {
        let question = meta.question.as_deref().unwrap_or("");
        self.id.is_none_or(|id| id == meta.id)
            && self.category.as_ref().is_none_or(|c| *c == meta.category)
            && self.tenant.as_ref().is_none_or(|t| *t == meta.tenant)
            && self
                .contains
                .as_ref()
                .is_none_or(|needle| question.to_lowercase().contains(needle.as_str()))
            && self.regex.as_ref().is_none_or(|re| re.is_match(question))
    }
}

/// `POST /admin/invalidate`: deletes matching entries from the store (and so, through its
/// change feed, from every gateway sharing it) and from this gateway's indexes.
pub async fn invalidate(
    State(state): State<AppState>,
    Json(request): Json<Invalidation>,
) -> Result<Json<Value>, ApiError> {
    let filter = Filter::new(request)?;
    let cache = state.cache();
    let Some(entries) = cache.store().scan(now_ms()).await else {
        return Err(ApiError::StoreUnavailable);
    };
    let ids: Vec<u64> = entries
        .iter()
        .filter(|meta| filter.matches(meta))
        .map(|meta| meta.id)
        .collect();
    cache.unindex(&ids);
    let Some(deleted) = cache.store().remove(ids).await else {
        return Err(ApiError::StoreUnavailable);
    };
    metrics::counter!("cachet_invalidated_total").increment(deleted as u64);
    tracing::info!(deleted, "entries invalidated");
    Ok(Json(json!({ "deleted": deleted })))
}

/// `POST /admin/reload`: re-reads the config file.
pub async fn reload_config(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match reload(&state).await {
        Ok(reloaded) => Ok(Json(json!({
            "reloaded": true,
            "restart_required": reloaded.restart_required,
        }))),
        Err(error) => Err(ApiError::InvalidConfig {
            message: error.to_string(),
            problems: error.problems(),
        }),
    }
}

/// `GET /admin/stats`: entries per category, the policy in force and the upstream load.
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let cache = state.cache();
    let config = cache.config();
    let load_state = cache.load().state();
    let sample = cache.load().sample();
    let policy = cache.policy();
    let estimates = state.shadows.estimates(cache);
    let categories: Vec<Value> = cache
        .entries_per_category()
        .into_iter()
        .filter_map(|(name, entries, bytes)| {
            let category = config.category(&name)?;
            let points = policy.points(&name);
            let operating = points.map(|p| match load_state {
                cachet_policies::LoadState::Normal => p.normal,
                cachet_policies::LoadState::Relaxed => p.relaxed,
            });
            let calibrated = operating.and_then(|o| o.calibrated).map(|c| {
                json!({
                    "max_wrong_rate": operating.and_then(|o| o.budget),
                    "served": c.served,
                    "wrong": c.wrong,
                    "wrong_upper_bound": c.wrong_bound,
                    "should_hits": c.should_hits,
                    "traps": c.traps,
                })
            });
            Some(json!({
                "name": name,
                "entries": entries,
                "bytes": bytes,
                "threshold": policy.operating_point(&name, load_state).threshold.get(),
                "calibration": calibrated,
                "tightened": points.map_or(0, |p| p.tightened),
                "shadow_rate": category.shadow_rate,
                "shadow": estimates.get(&name),
                "ttl_seconds": category.effective_ttl(load_state).as_secs_f64(),
                "cacheable": category.cacheable,
                "shared": category.shared,
            }))
        })
        .collect();
    Json(json!({
        "store": { "kind": cache.store().kind(), "up": cache.store().is_up() },
        "load": {
            "state": format!("{load_state:?}").to_lowercase(),
            "in_flight": sample.in_flight,
            "latency_ewma_ms": sample.latency_ewma.as_secs_f64() * 1000.0,
            "overload_rate": sample.error_rate,
        },
        "categories": categories,
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use cachet_index::EntryMeta;

    use super::*;

    fn meta(id: u64, category: &str, tenant: &str, question: &str) -> EntryMeta {
        EntryMeta {
            id,
            category: category.to_owned(),
            tenant: tenant.to_owned(),
            partition: 0,
            vector: Vec::new(),
            question: Some(question.to_owned()),
            created_at_ms: 0,
            expires_at_ms: u64::MAX,
            cost: 0.0,
            body_bytes: 0,
        }
    }

    fn filter(body: serde_json::Value) -> Result<Filter, ApiError> {
        Filter::new(serde_json::from_value(body).expect("invalidation body"))
    }

    #[test]
    fn every_condition_given_must_hold() {
        let tenant = Tenant::from_api_key("sk-a").as_str().to_owned();
        let entries = [
            meta(0x1f, "code", &tenant, "How do I sort a list in Python?"),
            meta(0x2f, "code", "other", "How do I sort a list in Rust?"),
            meta(0x3f, "general", &tenant, "What is the capital of France?"),
        ];
        let check = |body: serde_json::Value, expected: &[u64]| {
            let f = filter(body.clone()).expect("valid filter");
            let ids: Vec<u64> = entries
                .iter()
                .filter(|m| f.matches(m))
                .map(|m| m.id)
                .collect();
            assert_eq!(ids, expected, "{body}");
        };
        check(json!({"id": "000000000000002f"}), &[0x2f]);
        check(json!({"category": "code"}), &[0x1f, 0x2f]);
        check(json!({"api_key": "sk-a"}), &[0x1f, 0x3f]);
        check(json!({"api_key": "sk-a", "category": "code"}), &[0x1f]);
        check(json!({"question_contains": "SORT A LIST"}), &[0x1f, 0x2f]);
        check(json!({"question_regex": "(?i)france|rust"}), &[0x2f, 0x3f]);
    }

    #[test]
    fn bad_filters_are_refused_with_the_field() {
        assert!(matches!(
            filter(json!({})),
            Err(ApiError::InvalidRequest { .. })
        ));
        let Err(ApiError::InvalidRequest { param, .. }) = filter(json!({"id": "xyz"})) else {
            panic!("a bad id must be refused");
        };
        assert_eq!(param, Some("id"));
        let Err(ApiError::InvalidRequest { param, .. }) = filter(json!({"question_regex": "("}))
        else {
            panic!("a bad regex must be refused");
        };
        assert_eq!(param, Some("question_regex"));
    }

    #[test]
    fn the_token_comes_from_a_bearer_header_only() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("ascii"),
            );
            headers
        };
        assert_eq!(
            bearer(&with("Bearer secret-token-0123456")),
            Some("secret-token-0123456")
        );
        assert_eq!(bearer(&with("secret-token-0123456")), None);
        assert_eq!(bearer(&with("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
