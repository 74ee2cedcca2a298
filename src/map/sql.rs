//! An SQL database as the map: PostgreSQL, MySQL/MariaDB or SQLite, through `sqlx`.
//!
//! The query has one parameter, the lookup key, always bound, never spliced into the text (so
//! `x' OR '1'='1` is a user name like any other; Perdition's PostgreSQL library splices it).
//! It returns a column `servername` (`[user@]host[:port]`) and optionally `port`. Without a
//! query of its own, Perdition's table is read: `tblPerdition` with `user`, `servername` and
//! `port` columns. Connections are pooled; each lookup has a timeout, after which the user is
//! told to try later.

use std::time::Duration;

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::OnceLock;

use super::{Answer, LookupFuture, Map, MapError, ProbeFuture, Query};
use crate::config::database::{Database, UnknownDatabase};

/// The longest key looked up; longer names are nobody.
const MAX_KEY: usize = 1024;

/// Connections kept to the database.
const MAX_CONNECTIONS: u32 = 8;

pub struct SqlMap {
    /// Checked when the configuration is read; the pool is made on first use, inside the
    /// runtime.
    options: AnyConnectOptions,
    pool: OnceLock<AnyPool>,
    query: String,
    /// The database, without its password, for log lines.
    name: String,
    timeout: Duration,
}

/// Why an SQL map could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SqlSetupError {
    /// The URL names no database this map speaks.
    #[error(transparent)]
    UnknownScheme(#[from] UnknownDatabase),
    /// `url` without its password.
    #[error("database {url}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Perdition's table query could not be written.
    #[error(transparent)]
    Table(#[from] crate::config::perdition::TableQueryError),
}

impl SqlMap {
    /// Check `url` and `query`'s database; connections are opened on first use.
    pub fn new(url: &str, query: String, timeout: Duration) -> Result<SqlMap, SqlSetupError> {
        Database::of(url)?;
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url).map_err(|source| SqlSetupError::BadUrl {
            url: super::masked_url(url),
            source,
        })?;
        Ok(SqlMap {
            options,
            pool: OnceLock::new(),
            query,
            name: super::masked_url(url),
            timeout,
        })
    }

    fn pool(&self) -> &AnyPool {
        self.pool.get_or_init(|| {
            AnyPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(self.timeout)
                .connect_lazy_with(self.options.clone())
        })
    }

    async fn find(&self, key: &str) -> Result<Answer, MapError> {
        if key.len() > MAX_KEY {
            return Err(MapError::NotFound);
        }
        let rows = tokio::time::timeout(
            self.timeout,
            sqlx::query(&self.query).bind(key).fetch_all(self.pool()),
        )
        .await
        .map_err(|_| MapError::Unavailable(format!("{}: no answer in time", self.name)))?
        .map_err(|e| MapError::Unavailable(format!("{}: {e}{}", self.name, hint(&e))))?;
        let row = rows.first().ok_or(MapError::NotFound)?;
        let server = text(row, "servername")
            .map_err(|e| MapError::Unavailable(format!("{}: {e}", self.name)))?
            .filter(|s| !s.trim().is_empty())
            .ok_or(MapError::NotFound)?;
        let port = text(row, "port")
            .unwrap_or(None)
            .filter(|p| !p.trim().is_empty());
        Ok(Answer::Text(match port {
            Some(port) => format!("{}:{}", server.trim(), port.trim()),
            None => server.trim().to_string(),
        }))
    }
}

/// What to do about an error the query's own text can fix.
fn hint(error: &sqlx::Error) -> &'static str {
    if error.to_string().contains("Bpchar") {
        " (a char(n) column: cast it in the query, e.g. servername::text)"
    } else {
        ""
    }
}

/// A column the query's rows lack, or hold in a type that is neither text nor a number.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {source}")]
struct UnreadableColumn {
    column: String,
    #[source]
    source: sqlx::Error,
}

/// A column as text, whether the database keeps it as text or as a number; `None` for NULL.
fn text(row: &AnyRow, column: &str) -> Result<Option<String>, UnreadableColumn> {
    if let Ok(value) = row.try_get::<Option<String>, _>(column) {
        return Ok(value);
    }
    row.try_get::<Option<i64>, _>(column)
        .map(|v| v.map(|n| n.to_string()))
        .map_err(|source| UnreadableColumn {
            column: column.to_string(),
            source,
        })
}

impl Map for SqlMap {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        Box::pin(self.find(query.key))
    }

    fn describe(&self) -> String {
        format!("SQL {}", self.name)
    }

    /// The query itself, for a name nobody has: it must run (connection, table, columns).
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            match self.find("").await {
                Ok(_) | Err(MapError::NotFound) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_cannot_carry_sql() {
        // Perdition's table and columns: config::perdition::sql's test of the same name.
        assert!(SqlMap::new("oracle://x", String::new(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn passwords_stay_out_of_names() {
        assert_eq!(
            super::super::masked_url("mysql://u:secret@h/db"),
            "mysql://u:***@h/db"
        );
        assert_eq!(
            super::super::masked_url("ldap://h/dc=x?a,b?one?(uid=%s)?bindname=cn=r,x-bindpw=pw"),
            "ldap://h/dc=x?a,b?one?(uid=%s)?bindname=cn=r,x-bindpw=***"
        );
        assert_eq!(
            super::super::masked_url("mysql://u:secret@[::1/db"),
            "mysql://***@[::1/db"
        );
    }
}
