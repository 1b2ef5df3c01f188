//! API errors: each maps to an HTTP status and a stable `type` code, in OpenAI's error shape.
//!
//! 5xx bodies are generic; the detail is logged inside the request's span (which carries the
//! request id, also returned in the `x-request-id` header).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;

/// Seconds a client is told to wait after a 429 or 503; one decode step of a full batch plus the
/// queue ahead usually clears within this on the models this runtime targets.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, malformed or out of range; `param` names it.
    #[error("{message}")]
    Invalid {
        param: Option<String>,
        message: String,
    },
    /// The prompt plus the completion do not fit in the context.
    #[error("{message}")]
    ContextLengthExceeded { param: String, message: String },
    /// `model` names another model.
    #[error("the model {0:?} does not exist; GET /v1/models lists the served model")]
    ModelNotFound(String),
    /// The queue is full.
    #[error("the server is overloaded ({0}); retry later")]
    Overloaded(String),
    /// Not ready yet, or draining before shutdown.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Anything else; the detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for an invalid field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } | Self::ContextLengthExceeded { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `type` code clients can match on; also a bounded metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request_error",
            Self::ContextLengthExceeded { .. } => "context_length_exceeded",
            Self::ModelNotFound(_) => "model_not_found",
            Self::Overloaded(_) => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::Invalid { param, .. } => param.as_deref(),
            Self::ContextLengthExceeded { param, .. } => Some(param),
            Self::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            Self::Internal(_) => {
                "the server failed to process the request; the x-request-id response header identifies it in the server log"
                    .to_string()
            }
            other => other.to_string(),
        };
        json!({
            "error": {
                "message": message,
                "type": self.category(),
                "param": self.param(),
                "code": self.category(),
            }
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded { .. } => Self::Overloaded(e.to_string()),
            EngineError::Stopped => Self::Unavailable("the engine is shutting down"),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(detail) = &self {
            // Inside the request span: the log line carries the request id.
            tracing::error!(error = %detail, "request failed");
        } else {
            tracing::debug!(error = %self, kind = self.category(), "request refused");
        }
        let mut resp = (status, Json(self.body())).into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        resp
    }
}
