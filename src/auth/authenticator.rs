//! Resolves a request's API key to a [`Caller`], with a small cache: without it, every RPC would pay a
//! database round trip for the key. A cached entry lives for a short TTL and is dropped at once when its
//! key is revoked; other replicas sharing a PostgreSQL database drop it when the revocation is announced
//! (see `store::invalidate`), so a revoked key stops working at once everywhere.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use http::HeaderMap;
use sea_orm::{
    ConnectionTrait,
    sea_query::{Alias, Expr, ExprTrait, JoinType, Query},
};

use super::{Caller, Scopes, keys};
use crate::{
    error::{Error, Result},
    store::Db,
};

const CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on the cache; reaching it clears it (a cheap, safe response to a flood of distinct valid keys).
const CACHE_MAX: usize = 10_000;

struct Entry {
    caller: Arc<Caller>,
    expires: Instant,
}

pub struct Authenticator {
    db: Db,
    /// By SHA-256 of the presented key: a hit means the exact key was verified before.
    cache: RwLock<HashMap<[u8; 32], Entry>>,
}

impl Authenticator {
    pub fn new(db: Db) -> Self {
        Authenticator {
            db,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The caller presenting `headers`, or UNAUTHENTICATED.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>> {
        let key = presented_key(headers)?;
        let digest = keys::hash(key);
        if let Some(caller) = self.cached(&digest) {
            return Ok(caller);
        }
        let caller = Arc::new(self.lookup(key, &digest).await?);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            digest,
            Entry {
                caller: caller.clone(),
                expires: Instant::now() + CACHE_TTL,
            },
        );
        Ok(caller)
    }

    pub fn clear(&self) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Forgets every cached caller of key `key_id` (after a revocation).
    pub fn invalidate_key(&self, key_id: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, e| e.caller.key_id != key_id);
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Arc<Caller>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .get(digest)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.caller.clone())
    }

    async fn lookup(&self, key: &str, digest: &[u8; 32]) -> Result<Caller> {
        let k = Alias::new("k");
        let w = Alias::new("w");
        let query = Query::select()
            .column((k.clone(), Alias::new("id")))
            .column((k.clone(), Alias::new("workspace_id")))
            .column((k.clone(), Alias::new("key_hash")))
            .column((k.clone(), Alias::new("scopes")))
            .column((k.clone(), Alias::new("revoke_time")))
            .expr_as(
                Expr::col((w.clone(), Alias::new("name"))),
                Alias::new("workspace_name"),
            )
            .from_as(Alias::new("api_keys"), k.clone())
            .join_as(
                JoinType::InnerJoin,
                Alias::new("workspaces"),
                w.clone(),
                Expr::col((w, Alias::new("id"))).equals((k.clone(), Alias::new("workspace_id"))),
            )
            .and_where(Expr::col((k, Alias::new("prefix"))).eq(keys::public_prefix(key)))
            .to_owned();
        let row = self
            .db
            .reader()
            .query_one(&query)
            .await?
            .ok_or_else(unknown_key)?;
        let key_hash: String = row.try_get("", "key_hash")?;
        if !keys::hash_matches(digest, &key_hash) {
            return Err(unknown_key());
        }
        if row.try_get::<Option<i64>>("", "revoke_time")?.is_some() {
            return Err(Error::Unauthenticated(
                "this API key has been revoked".into(),
            ));
        }
        let scopes: String = row.try_get("", "scopes")?;
        Ok(Caller {
            workspace_id: row.try_get("", "workspace_id")?,
            workspace_name: row.try_get("", "workspace_name")?,
            key_id: row.try_get("", "id")?,
            scopes: scopes.parse::<Scopes>().unwrap_or_default(),
        })
    }
}

fn unknown_key() -> Error {
    Error::Unauthenticated("unknown API key".into())
}

/// The key of `authorization: Bearer <key>`, `authorization: Token <key>` or `x-api-key: <key>`.
fn presented_key(headers: &HeaderMap) -> Result<&str> {
    let key = if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| unknown_key())?.trim();
        let (scheme, rest) = v.split_once(' ').ok_or_else(|| {
            Error::Unauthenticated(
                "authorization must be \"Bearer <key>\" or \"Token <key>\"".into(),
            )
        })?;
        if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
            return Err(Error::Unauthenticated(
                "authorization must be \"Bearer <key>\" or \"Token <key>\"".into(),
            ));
        }
        rest.trim()
    } else if let Some(v) = headers.get("x-api-key") {
        v.to_str().map_err(|_| unknown_key())?.trim()
    } else {
        return Err(Error::Unauthenticated(
            "missing API key: send \"authorization: Bearer <key>\" or \"x-api-key: <key>\"".into(),
        ));
    };
    if !keys::well_formed(key) {
        return Err(unknown_key());
    }
    Ok(key)
}
