//! API errors and their OpenAI-shaped JSON bodies: the one place errors become responses.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::flight::UpstreamFailure;

/// An error answered to the client. 5xx messages stay generic; the detail goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `param` names the offending field where there is one.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("request body is larger than {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("failed to read the request body")]
    BodyRead(#[source] axum::Error),
    #[error("the upstream could not be reached")]
    UpstreamUnavailable(#[source] Arc<reqwest::Error>),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout(#[source] Arc<reqwest::Error>),
    #[error("unknown route {0}")]
    NotFound(String),
    #[error("the cache store is unavailable; try again when /healthz reports it up")]
    StoreUnavailable,
    #[error("the admin api is disabled; set [admin] token or token_env in the config to enable it")]
    AdminDisabled,
    #[error("a valid admin token is required (Authorization: Bearer TOKEN)")]
    Unauthorized,
    #[error("a valid metrics token is required (Authorization: Bearer TOKEN)")]
    MetricsUnauthorized,
    /// A reloaded config was refused; the running policy stays in force.
    #[error("{message}")]
    InvalidConfig {
        message: String,
        problems: Vec<cachet_policies::Problem>,
    },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::InvalidRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            Self::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            Self::BodyRead(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_body",
            ),
            Self::UpstreamUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_unavailable",
            ),
            Self::UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            Self::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
            ),
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "store_unavailable",
            ),
            Self::AdminDisabled => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "admin_disabled",
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_admin_token",
            ),
            Self::MetricsUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_metrics_token",
            ),
            Self::InvalidConfig { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_config",
            ),
        }
    }
}

impl From<UpstreamFailure> for ApiError {
    fn from(failure: UpstreamFailure) -> Self {
        match failure {
            UpstreamFailure::Unavailable(e) => Self::UpstreamUnavailable(e),
            UpstreamFailure::Timeout(e) => Self::UpstreamTimeout(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        if status.is_server_error() {
            tracing::warn!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        }
        let param = match &self {
            Self::InvalidRequest { param, .. } => *param,
            _ => None,
        };
        let mut body = json!({
            "error": { "message": self.to_string(), "type": kind, "code": code, "param": param }
        });
        if let Self::InvalidConfig { problems, .. } = &self {
            body["error"]["problems"] = problems
                .iter()
                .map(|p| json!({ "path": p.path, "message": p.message }))
                .collect();
        }
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json body"))
    }

    #[tokio::test]
    async fn errors_are_openai_shaped() {
        let (status, body) = body_of(ApiError::invalid("model is required", Some("model"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["message"], "model is required");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");

        let (status, body) = body_of(ApiError::BodyTooLarge { limit_bytes: 10 }).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "request_too_large");
    }
}
