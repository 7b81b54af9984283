//! Authentication and authorization. A request is authenticated once, by [`Authenticator`], from its
//! `authorization: Bearer|Token <key>` or `x-api-key` header; the resulting [`Caller`] travels in the
//! request extensions, and handlers only ever ask it [`Caller::require`] a scope. Keys are looked up by
//! their public prefix and checked against a SHA-256 hash in constant time; the secret is never stored.

mod authenticator;
pub mod keys;
mod layer;
mod scopes;

use std::sync::Arc;

pub use authenticator::Authenticator;
pub use layer::{AuthLayer, AuthService};
pub use scopes::{Scope, Scopes};

use crate::error::{Error, Result};

/// Who is calling: a workspace, through one of its keys, with the key's scopes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub workspace_id: String,
    pub workspace_name: String,
    pub key_id: String,
    pub scopes: Scopes,
}

impl Caller {
    /// PERMISSION_DENIED unless the caller's key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "this API key lacks the {} scope",
                scope.name()
            )))
        }
    }
}

/// The caller that the auth layer put in a request's extensions.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Arc<Caller>> {
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("missing API key".into()))
}
