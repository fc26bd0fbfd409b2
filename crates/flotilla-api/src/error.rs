//! Kubernetes `Status` errors and field errors.
//!
//! Every failure the API answers with is an [`ApiError`], rendered as a meta/v1 `Status`
//! object with the HTTP code, `reason` and a message a person can act on, as
//! kube-apiserver does (kubectl and the client libraries read `reason` and `details`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use std::fmt;

/// The kind of problem with one field, as in k8s.io/apimachinery's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorType {
    Required,
    Invalid,
    NotFound,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
}

impl FieldErrorType {
    /// The `reason` of a `StatusCause` for this kind of problem.
    pub fn cause_reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotFound => "FieldValueNotFound",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Forbidden => "FieldValueForbidden",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotFound => "Not found",
            Self::NotSupported => "Unsupported value",
            Self::Duplicate => "Duplicate value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Forbidden => "Forbidden",
        }
    }
}

/// One invalid field: its path (`spec.template.spec.containers[0].name`), what is wrong,
/// the offending value when there is one, and what would be right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub error_type: FieldErrorType,
    /// The bad value, rendered as JSON (`"Foo_"`, `-1`), when it helps.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        error_type: FieldErrorType,
        field: impl Into<String>,
        value: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        // A bad value is quoted, never echoed whole: it may be megabytes.
        let value = value.map(|v| crate::limits::truncate(&v, crate::limits::MAX_QUOTED_VALUE_BYTES).into_owned());
        Self { field: field.into(), error_type, value, detail: detail.into() }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Required, field, None, detail)
    }

    /// An invalid value; `value` is rendered as JSON.
    pub fn invalid(field: impl Into<String>, value: &impl serde::Serialize, detail: impl Into<String>) -> Self {
        let value = serde_json::to_string(value).unwrap_or_default();
        Self::new(FieldErrorType::Invalid, field, Some(value), detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Forbidden, field, None, detail)
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        let detail = format!("may not be more than {max} bytes");
        Self::new(FieldErrorType::TooLong, field, None, detail)
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        let detail = format!("supported values: {}", quoted.join(", "));
        Self::new(FieldErrorType::NotSupported, field, Some(format!("\"{value}\"")), detail)
    }

    pub fn duplicate(field: impl Into<String>, value: &impl serde::Serialize) -> Self {
        let value = serde_json::to_string(value).unwrap_or_default();
        Self::new(FieldErrorType::Duplicate, field, Some(value), "")
    }

    /// The same error under a parent path (`spec` + `replicas` = `spec.replicas`).
    pub fn under(mut self, parent: &str) -> Self {
        if !parent.is_empty() {
            self.field = if self.field.is_empty() || self.field.starts_with('[') {
                format!("{parent}{}", self.field)
            } else {
                format!("{parent}.{}", self.field)
            };
        }
        self
    }

    /// The message part, without the field path.
    fn body(&self) -> String {
        let mut out = self.error_type.text().to_string();
        if let Some(value) = &self.value {
            out.push_str(": ");
            out.push_str(value);
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// The `reason` of a failure `Status`, as kube-apiserver spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    Timeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotAcceptable => "NotAcceptable",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Gone => "Gone",
            Self::Invalid => "Invalid",
            Self::RequestEntityTooLarge => "RequestEntityTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::TooManyRequests => "TooManyRequests",
            Self::InternalError => "InternalError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Timeout => "Timeout",
        }
    }

    /// Every reason, for parsing.
    const ALL: [Reason; 16] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::NotAcceptable,
        Self::AlreadyExists,
        Self::Conflict,
        Self::Gone,
        Self::Invalid,
        Self::RequestEntityTooLarge,
        Self::UnsupportedMediaType,
        Self::TooManyRequests,
        Self::InternalError,
        Self::ServiceUnavailable,
        Self::Timeout,
    ];

    /// The reason a `Status` names, else the one its HTTP code implies (a client reading
    /// a server's answer).
    pub fn from_status(reason: Option<&str>, code: u16) -> Reason {
        if let Some(reason) = Self::ALL.iter().find(|r| Some(r.as_str()) == reason) {
            return *reason;
        }
        match code {
            409 => Self::Conflict,
            400..=499 => Self::ALL.iter().find(|r| r.code() == code).copied().unwrap_or(Self::BadRequest),
            503 => Self::ServiceUnavailable,
            504 => Self::Timeout,
            _ => Self::InternalError,
        }
    }

    /// The HTTP status code that goes with this reason.
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::NotAcceptable => 406,
            Self::AlreadyExists | Self::Conflict => 409,
            Self::Gone => 410,
            Self::RequestEntityTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Invalid => 422,
            Self::TooManyRequests => 429,
            Self::InternalError => 500,
            Self::ServiceUnavailable => 503,
            Self::Timeout => 504,
        }
    }
}

/// A failed API request, rendered as a meta/v1 `Status`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    /// The object the error is about and, for `Invalid`, each bad field (boxed: errors
    /// travel in every `Result` of the request path and should stay small).
    pub details: Option<Box<StatusDetails>>,
}

/// The API's result type.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Which object an error is about, for `Status.details`.
#[derive(Clone, Copy, Debug)]
pub struct ObjectRef<'a> {
    /// The API group ("" for core).
    pub group: &'a str,
    /// The resource's plural ("deployments") as kube-apiserver names it in details.
    pub resource: &'a str,
    pub name: &'a str,
}

impl ObjectRef<'_> {
    /// `deployments.apps "web"` / `pods "web"`: how kube-apiserver names an object.
    fn qualified(&self) -> String {
        let name = crate::limits::truncate(self.name, crate::limits::MAX_QUOTED_VALUE_BYTES);
        if self.group.is_empty() {
            format!("{} \"{name}\"", self.resource)
        } else {
            format!("{}.{} \"{name}\"", self.resource, self.group)
        }
    }

    fn details(&self) -> Box<StatusDetails> {
        Box::new(StatusDetails {
            name: Some(crate::limits::truncate(self.name, crate::limits::MAX_QUOTED_VALUE_BYTES).into_owned()),
            group: Some(self.group.to_string()),
            kind: Some(self.resource.to_string()),
            ..StatusDetails::default()
        })
    }
}

/// A message cut to [`crate::limits::MAX_MESSAGE_BYTES`]: messages quote what clients
/// sent (serde's "invalid type: string ..." among them), and an answer must not be
/// larger than its question.
fn bounded(message: String) -> String {
    if message.len() <= crate::limits::MAX_MESSAGE_BYTES {
        return message;
    }
    crate::limits::truncate(&message, crate::limits::MAX_MESSAGE_BYTES).into_owned()
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: bounded(message.into()), details: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::InternalError, message)
    }

    pub fn not_found(object: ObjectRef<'_>) -> Self {
        Self {
            reason: Reason::NotFound,
            message: format!("{} not found", object.qualified()),
            details: Some(object.details()),
        }
    }

    pub fn already_exists(object: ObjectRef<'_>) -> Self {
        Self {
            reason: Reason::AlreadyExists,
            message: format!("{} already exists", object.qualified()),
            details: Some(object.details()),
        }
    }

    /// An optimistic-concurrency failure, worded as kube-apiserver words it so that
    /// clients which retry on it recognise it.
    pub fn conflict(object: ObjectRef<'_>, why: &str) -> Self {
        Self {
            reason: Reason::Conflict,
            message: format!("Operation cannot be fulfilled on {}: {why}", object.qualified()),
            details: Some(object.details()),
        }
    }

    /// `Kind.group "name" is invalid: field: problem` with one cause per field (the
    /// first [`crate::limits::MAX_CAUSES`] of them: the message says how many there were).
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        // The name is the client's too: an invalid one may be any length.
        let name = &*crate::limits::truncate(name, crate::limits::MAX_QUOTED_VALUE_BYTES);
        let all = errors.len();
        let errors = &errors[..all.min(crate::limits::MAX_CAUSES)];
        let qualified_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let mut joined = if list.len() == 1 { list.join("") } else { format!("[{}]", list.join(", ")) };
        if all > errors.len() {
            joined.push_str(&format!(" (and {} more errors)", all - errors.len()));
        }
        let causes = errors
            .iter()
            .map(|e| StatusCause {
                field: Some(e.field.clone()),
                message: Some(e.body()),
                reason: Some(e.error_type.cause_reason().to_string()),
            })
            .collect();
        Self {
            reason: Reason::Invalid,
            message: bounded(format!("{qualified_kind} \"{name}\" is invalid: {joined}")),
            details: Some(Box::new(StatusDetails {
                name: Some(name.to_string()),
                group: Some(group.to_string()),
                kind: Some(kind.to_string()),
                causes: Some(causes),
                ..StatusDetails::default()
            })),
        }
    }

    /// The watch history a client asked for is gone; it must list again.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(Reason::Gone, message)
    }

    /// The error a server's failure `Status` body describes (`code` is the response's
    /// HTTP status, used when the body is not a Status).
    pub fn from_status_body(code: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Status>(body) {
            Ok(status) if status.status.as_deref() == Some("Failure") || status.message.is_some() => Self {
                reason: Reason::from_status(status.reason.as_deref(), code),
                message: status.message.unwrap_or_default(),
                details: status.details.map(Box::new),
            },
            _ => Self::new(
                Reason::from_status(None, code),
                format!("the server answered {code}: {}", String::from_utf8_lossy(body).trim()),
            ),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// The meta/v1 `Status` object for the response body.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code())),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.as_str().to_string()),
            status: Some("Failure".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_every_field_like_kube_apiserver() {
        let errors = vec![
            FieldError::invalid("spec.replicas", &-1, "must be greater than or equal to 0"),
            FieldError::required("metadata.name", "name or generateName is required"),
        ];
        let err = ApiError::invalid("Deployment", "apps", "web", &errors);
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.message,
            "Deployment.apps \"web\" is invalid: [spec.replicas: Invalid value: -1: must be \
             greater than or equal to 0, metadata.name: Required value: name or generateName is required]"
        );
        let status = err.to_status();
        let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[0].field.as_deref(), Some("spec.replicas"));
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueInvalid"));
    }

    #[test]
    fn not_found_and_conflict_name_the_object() {
        let obj = ObjectRef { group: "apps", resource: "deployments", name: "web" };
        assert_eq!(ApiError::not_found(obj).message, "deployments.apps \"web\" not found");
        let core = ObjectRef { group: "", resource: "pods", name: "p" };
        let conflict = ApiError::conflict(core, "the object has been modified");
        assert_eq!(conflict.code(), 409);
        assert!(conflict.message.starts_with("Operation cannot be fulfilled on pods \"p\""));
    }

    #[test]
    fn field_errors_nest_under_parents() {
        let e = FieldError::required("name", "").under("spec.containers[0]");
        assert_eq!(e.field, "spec.containers[0].name");
        let e = FieldError::required("[1]", "").under("spec.containers");
        assert_eq!(e.field, "spec.containers[1]");
    }
}
