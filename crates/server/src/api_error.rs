//! HTTP errors as OpenAI-style bodies, and a JSON body extractor whose every failure is one.
//!
//! Invariant: bad input is never a 500 and never a panic. Validation failures are 400, an unknown
//! model 404, a missing or wrong API key 401, an oversized body 413 and a full waiting queue 503;
//! 500 is reserved for failures of the engine itself.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::openai::{ErrorBody, ErrorDetail};

/// An error answered to an HTTP client.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiError {
    /// The request is malformed or a value is out of range (400).
    BadRequest {
        /// What was wrong and how to fix it.
        message: String,
        /// The offending field, when known.
        param: Option<String>,
    },
    /// The request names a model this server does not serve (404).
    ModelNotFound(String),
    /// No endpoint at this path (404).
    NotFoundPath,
    /// `--api-key` is set and the request's bearer token is missing or wrong (401).
    Unauthorized,
    /// The body is over the configured limit (413).
    PayloadTooLarge(usize),
    /// The waiting queue is full (503): the client should retry later.
    Overloaded(String),
    /// The engine failed (500); never used for bad input.
    Internal(String),
}

impl ApiError {
    /// A 400 for `message` without a named parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_) | ApiError::NotFoundPath => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI-style body of this error.
    pub fn body(&self) -> ErrorBody {
        let (kind, message, param) = match self {
            ApiError::BadRequest { message, param } => {
                ("BadRequestError", message.clone(), param.clone())
            }
            ApiError::ModelNotFound(model) => (
                "NotFoundError",
                format!("The model `{model}` does not exist."),
                None,
            ),
            ApiError::NotFoundPath => (
                "NotFoundError",
                "There is no endpoint at this path.".to_string(),
                None,
            ),
            ApiError::Unauthorized => (
                "AuthenticationError",
                "Unauthorized: send the server's API key as `Authorization: Bearer <key>`."
                    .to_string(),
                None,
            ),
            ApiError::PayloadTooLarge(limit) => (
                "PayloadTooLargeError",
                format!("The request body is larger than the server's limit of {limit} bytes."),
                None,
            ),
            ApiError::Overloaded(message) => ("ServiceUnavailableError", message.clone(), None),
            ApiError::Internal(message) => ("InternalServerError", message.clone(), None),
        };
        ErrorBody {
            error: ErrorDetail {
                message,
                kind,
                param,
                code: self.status().as_u16(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}

/// A JSON request body. Unlike `axum::Json` it ignores the content type (curl's default form type
/// included), answers 400 for malformed JSON or wrong types (axum would answer 422), and 413 when
/// the body is over the router's `DefaultBodyLimit`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(MAX_BODY_BYTES)
                } else {
                    ApiError::bad_request(format!("Could not read the request body: {rejection}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|error| {
                ApiError::bad_request(format!("The request body is not valid: {error}"))
            })
    }
}

/// Largest request body the router accepts, in bytes (prompts of a few hundred thousand
/// tokens fit).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Probe {
        count: u32,
    }

    async fn probe(ApiJson(probe): ApiJson<Probe>) -> String {
        probe.count.to_string()
    }

    async fn send(body: impl Into<Body>) -> (StatusCode, serde_json::Value) {
        let app = Router::new()
            .route("/", post(probe))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        let response = app
            .oneshot(Request::post("/").body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn malformed_and_mistyped_bodies_are_400_with_openai_body() {
        for body in ["{not json", r#"{"count":"three"}"#, r#"{"count":-1}"#, "{}"] {
            let (status, json) = send(body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(json["error"]["type"], "BadRequestError");
            assert_eq!(json["error"]["code"], 400);
            assert!(
                json["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not valid")
            );
        }
        assert_eq!(send(r#"{"count":3}"#).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let (status, json) = send(vec![b' '; MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error"]["code"], 413);
    }

    #[test]
    fn statuses_and_messages() {
        let not_found = ApiError::ModelNotFound("gpt-9".into());
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            not_found.body().error.message,
            "The model `gpt-9` does not exist."
        );
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::Overloaded("full".into()).status().as_u16(), 503);
        assert_eq!(ApiError::Internal("boom".into()).body().error.code, 500);
    }
}
