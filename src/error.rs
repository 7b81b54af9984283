//! The one domain error type. Every layer returns [`Error`]; it becomes a `tonic::Status` in exactly one
//! place (`From<Error> for Status`), and the REST shim maps that status to HTTP. Database and other internal
//! failures are logged with their detail here and reach the caller only as a generic INTERNAL.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// Bad input. `field` is the request field path (e.g. `agent.config.max_steps`).
    InvalidArgument {
        field: String,
        message: String,
    },
    /// The resource does not exist, or belongs to another workspace (never distinguished).
    NotFound(String),
    AlreadyExists(String),
    /// The operation does not apply to the resource's current state.
    FailedPrecondition(String),
    /// A concurrent change won; the caller may retry.
    Aborted(String),
    Unauthenticated(String),
    PermissionDenied(String),
    ResourceExhausted(String),
    Unavailable(String),
    Unimplemented(String),
    /// A fault of the server. The detail is logged, never sent.
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::Internal(detail.to_string())
    }

    /// Prefixes the field of an INVALID_ARGUMENT with `prefix.` (validation of nested messages).
    pub fn in_field(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } => {
                let field = if field.is_empty() {
                    prefix.to_owned()
                } else {
                    format!("{prefix}.{field}")
                };
                Error::InvalidArgument { field, message }
            }
            other => other,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidArgument { field, message } => write!(f, "invalid {field}: {message}"),
            Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::Aborted(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m)
            | Error::ResourceExhausted(m)
            | Error::Unavailable(m)
            | Error::Unimplemented(m)
            | Error::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        Error::Internal(format!("database: {e}"))
    }
}

impl From<sea_orm::TransactionError<Error>> for Error {
    fn from(e: sea_orm::TransactionError<Error>) -> Self {
        match e {
            sea_orm::TransactionError::Connection(e) => e.into(),
            sea_orm::TransactionError::Transaction(e) => e,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { field, message } => {
                let text = format!("invalid {field}: {message}");
                let details = ErrorDetails::with_bad_request_violation(field, message);
                Status::with_error_details(Code::InvalidArgument, text, details)
            }
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Unimplemented(m) => Status::unimplemented(m),
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
