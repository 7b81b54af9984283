//! Persistence: the database handle, migrations, entities, and the helpers every query shares
//! (keyset cursors, time encoding).
//!
//! SQLite gets exactly one writer connection and a small pool of readers: with WAL, readers never
//! block the writer, and a single writer avoids SQLite's busy-wait backoff, which pushes tail latency
//! to hundreds of milliseconds under concurrent writers. PostgreSQL gets one pool for both.

pub mod cursor;
pub mod entities;
pub mod invalidate;
pub mod migration;
pub mod notify;
pub mod time;

use std::{str::FromStr, time::Duration};

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, SqlxPostgresConnector,
    SqlxSqliteConnector,
    sqlx::{
        self,
        postgres::{PgConnectOptions, PgPoolOptions},
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    },
};
use sea_orm_migration::MigratorTrait;

use crate::error::{Error, Result};

/// Readers for SQLite: enough to overlap reads with the writer on two cores, few enough to stay cheap.
const SQLITE_READERS: u32 = 4;
const POSTGRES_POOL: u32 = 16;

#[derive(Clone, Debug)]
pub struct Db {
    write: DatabaseConnection,
    read: DatabaseConnection,
    backend: DbBackend,
}

impl Db {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://...`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        let db = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url).await?
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Self::connect_postgres(url).await?
        } else {
            let mut opts = ConnectOptions::new(url);
            opts.sqlx_logging(false);
            let conn = Database::connect(opts).await?;
            let backend = conn.get_database_backend();
            Db {
                write: conn.clone(),
                read: conn,
                backend,
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn connect_sqlite(url: &str) -> Result<Db> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", e.to_string()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone())
            .await
            .map_err(|e| Error::Unavailable(format!("cannot open the SQLite database: {e}")))?;
        let write = SqlxSqliteConnector::from_sqlx_sqlite_pool(writer);
        // An in-memory database exists once per connection: it cannot have separate readers.
        let read = if in_memory {
            write.clone()
        } else {
            let readers = SqlitePoolOptions::new()
                .max_connections(SQLITE_READERS)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts.read_only(true))
                .await
                .map_err(|e| Error::Unavailable(format!("cannot open the SQLite database: {e}")))?;
            SqlxSqliteConnector::from_sqlx_sqlite_pool(readers)
        };
        Ok(Db {
            write,
            read,
            backend: DbBackend::Sqlite,
        })
    }

    async fn connect_postgres(url: &str) -> Result<Db> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_POOL)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e: sqlx::Error| {
                Error::Unavailable(format!("cannot connect to PostgreSQL: {e}"))
            })?;
        let conn = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
        Ok(Db {
            write: conn.clone(),
            read: conn,
            backend: DbBackend::Postgres,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        migration::Migrator::up(&self.write, None).await?;
        Ok(())
    }

    /// The connection for writes and for reads that must see the caller's own writes.
    pub fn writer(&self) -> &DatabaseConnection {
        &self.write
    }

    /// The connection for reads (a separate pool on SQLite).
    pub fn reader(&self) -> &DatabaseConnection {
        &self.read
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    pub async fn close(self) {
        let _ = self.read.close().await;
        let _ = self.write.close().await;
    }
}

/// Raw SQL for this backend: `?` placeholders become `$1, $2...` on PostgreSQL.
pub(crate) fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}
