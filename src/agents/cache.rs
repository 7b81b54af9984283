//! A read-through cache of live agent definitions, so that GetAgent (and, later, every run start) does
//! not pay a database read. Writers invalidate after commit. A reader that missed fills the cache only if
//! no invalidation happened since it started reading (the epoch check), so a stale read racing an update
//! can never be cached over it. On PostgreSQL, other replicas announce their changes (see
//! `store::invalidate`); entries also expire after a TTL, as a safety net.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::DbBackend;

use crate::pb::Agent;

const MAX_ENTRIES: usize = 100_000;

struct Entry {
    agent: Arc<Agent>,
    expires: Instant,
}

pub struct AgentCache {
    /// workspace id -> agent id -> entry (nested so that lookups borrow `&str` without allocating).
    map: RwLock<HashMap<String, HashMap<String, Entry>>>,
    epoch: AtomicU64,
    ttl: Duration,
}

impl AgentCache {
    pub fn new(backend: DbBackend) -> Self {
        let ttl = match backend {
            DbBackend::Sqlite => Duration::from_secs(300),
            _ => Duration::from_secs(30),
        };
        AgentCache {
            map: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            ttl,
        }
    }

    pub fn get(&self, ws: &str, id: &str) -> Option<Arc<Agent>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(ws)?
            .get(id)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.agent.clone())
    }

    /// The epoch to pass to [`put`](Self::put): read it before reading the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn put(&self, ws: &str, id: &str, agent: Arc<Agent>, epoch: u64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if map.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            map.clear();
        }
        let entry = Entry {
            agent,
            expires: Instant::now() + self.ttl,
        };
        map.entry(ws.to_owned())
            .or_default()
            .insert(id.to_owned(), entry);
    }

    pub fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }

    pub fn invalidate(&self, ws: &str, id: &str) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(m) = map.get_mut(ws) {
            m.remove(id);
        }
    }
}
