//! Errors answered by the REST API: an HTTP status plus the JSON error body qq reads.

use super::control::ControlError;
use super::json::ErrorBody;

/// A failed request: status, `error_class` and a description for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {class}: {description}")]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// The `error_class` of the body.
    pub class: &'static str,
    /// The `description` of the body.
    pub description: String,
}

impl ApiError {
    fn new(status: u16, class: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            class,
            description: description.into(),
        }
    }

    /// 400: the body or path is malformed.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(400, "http_bad_request_error", description)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(description: impl Into<String>) -> Self {
        Self::new(401, "http_unauthorized_error", description)
    }

    /// 401 for a failed login.
    pub fn login_failed() -> Self {
        Self::new(
            401,
            "auth_login_failed_error",
            "Invalid username or password",
        )
    }

    /// 403: the caller lacks `privilege`.
    pub fn forbidden(privilege: &str) -> Self {
        Self::new(
            403,
            "http_forbidden_error",
            format!("Missing privilege {privilege}"),
        )
    }

    /// 403 with a given description.
    pub fn forbidden_because(description: impl Into<String>) -> Self {
        Self::new(403, "http_forbidden_error", description)
    }

    /// 404: no such route or object.
    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(404, "http_not_found_error", description)
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "http_method_not_allowed_error",
            format!("Method {method} is not allowed on {path}"),
        )
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(409, "http_conflict_error", description)
    }

    /// 412: `If-Match` does not match the current ETag.
    pub fn precondition_failed(description: impl Into<String>) -> Self {
        Self::new(412, "http_precondition_failed_error", description)
    }

    /// 413: the body is larger than the server accepts.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "http_payload_too_large_error",
            format!("Request body is larger than {limit} bytes"),
        )
    }

    /// 500: the server failed.
    pub fn internal(description: impl Into<String>) -> Self {
        Self::new(500, "http_internal_server_error", description)
    }

    /// The JSON body answered for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error_class: self.class.to_string(),
            description: self.description.clone(),
            module: "atrest.api".to_string(),
            stack: Vec::new(),
            user_visible: true,
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError::new(e.status(), e.error_class(), e.to_string())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        tracing::error!(error = %e, "api state I/O failed");
        ApiError::internal(format!("Node state could not be updated: {e}"))
    }
}
