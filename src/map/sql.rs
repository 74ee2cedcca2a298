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

/// The longest key looked up; longer names are nobody.
const MAX_KEY: usize = 1024;

/// Connections kept to the database.
const MAX_CONNECTIONS: u32 = 8;

/// Perdition's table and columns (`perditiondb_mysql_makedb`).
pub struct Table {
    pub table: String,
    pub user_column: String,
    pub server_column: String,
    pub port_column: String,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            table: "tblPerdition".into(),
            user_column: "user".into(),
            server_column: "servername".into(),
            port_column: "port".into(),
        }
    }
}

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
    #[error("database URL scheme {scheme:?}: use postgres://, mysql:// or sqlite://")]
    UnknownScheme { scheme: String },
    /// `url` without its password.
    #[error("database {url}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Perdition's table query could not be written.
    #[error("{0}")]
    Table(String),
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

impl Dialect {
    fn of(url: &str) -> Result<Dialect, SqlSetupError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::Mysql),
            "sqlite" => Ok(Dialect::Sqlite),
            other => Err(SqlSetupError::UnknownScheme {
                scheme: other.to_string(),
            }),
        }
    }
}

/// [`Dialect::of`] for [`table_query`], whose errors are text until it moves to the
/// configuration.
fn dialect(url: &str) -> Result<Dialect, String> {
    Dialect::of(url).map_err(|e| e.to_string())
}

/// An identifier from the configuration, checked so that it can be written into SQL text.
fn identifier(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some(name)
        .ok_or_else(|| format!("{name:?} is not a plain SQL identifier (letters, digits, _)"))
}

/// Perdition's query for its table, in the database's own quoting and placeholder.
pub fn table_query(url: &str, table: &Table) -> Result<String, String> {
    let [t, u, s, p] = [
        &table.table,
        &table.user_column,
        &table.server_column,
        &table.port_column,
    ]
    .map(|name| identifier(name));
    let (t, u, s, p) = (t?, u?, s?, p?);
    Ok(match dialect(url)? {
        // Unquoted names fold to lower case, as Perdition's tables were created; `user` is a
        // reserved word and must be quoted. Perdition's own table keeps `char(n)` columns,
        // which sqlx's Any driver cannot read: cast to text, which also drops the blanks that
        // pad a `char(n)` value to its width (Perdition trims them too).
        Dialect::Postgres => {
            let q = |n: &str| {
                if n.eq_ignore_ascii_case("user") {
                    format!("\"{}\"", n.to_ascii_lowercase())
                } else {
                    n.to_string()
                }
            };
            format!(
                "SELECT CAST({} AS text) AS servername, CAST({} AS text) AS port FROM {} \
                 WHERE {} = $1",
                q(s),
                q(p),
                q(t),
                q(u)
            )
        }
        Dialect::Mysql => {
            format!("SELECT `{s}` AS servername, `{p}` AS port FROM `{t}` WHERE `{u}` = ?")
        }
        Dialect::Sqlite => {
            format!("SELECT \"{s}\" AS servername, \"{p}\" AS port FROM \"{t}\" WHERE \"{u}\" = ?")
        }
    })
}

impl SqlMap {
    /// Check `url` and `query`'s database; connections are opened on first use.
    pub fn new(url: &str, query: String, timeout: Duration) -> Result<SqlMap, SqlSetupError> {
        Dialect::of(url)?;
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

/// Perdition's `-m` for its MySQL and PostgreSQL libraries:
/// `dbhost[,dbhost2…]:dbport:dbname:dbtable:dbuser:dbpwd:srvcol:usercol:portcol`, empty fields
/// taking Perdition's defaults. Only the first host is used.
pub fn perdition_options(option: &str, postgres: bool) -> Result<(String, Table), String> {
    let fields: Vec<&str> = option.split(':').collect();
    if fields.len() > 9 {
        return Err(format!("map_library_opt {option:?}: more than 9 fields"));
    }
    let field = |i: usize, default: &'static str| {
        fields
            .get(i)
            .copied()
            .filter(|f| !f.is_empty())
            .unwrap_or(default)
    };
    let host = field(0, "localhost")
        .split(',')
        .next()
        .unwrap_or("localhost");
    let port = field(1, "0");
    let database = field(
        2,
        if postgres {
            "dbperdition"
        } else {
            "dbPerdition"
        },
    );
    let table = Table {
        table: field(3, "tblPerdition").to_string(),
        server_column: field(6, "servername").to_string(),
        user_column: field(7, "user").to_string(),
        port_column: field(8, "port").to_string(),
    };
    let (user, password) = (field(4, "perdition"), field(5, "perdition"));
    let scheme = if postgres { "postgres" } else { "mysql" };
    let mut url = url::Url::parse(&format!("{scheme}://{host}/"))
        .map_err(|e| format!("map_library_opt host {host:?}: {e}"))?;
    url.set_username(user)
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| format!("map_library_opt user {user:?}"))?;
    if port != "0" {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("map_library_opt port {port:?}"))?;
        url.set_port(Some(port))
            .map_err(|()| format!("map_library_opt port {port}"))?;
    }
    url.set_path(database);
    Ok((url.to_string(), table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perditions_table_in_each_dialect() {
        let t = Table::default();
        assert_eq!(
            table_query("postgres://h/db", &t).unwrap(),
            "SELECT CAST(servername AS text) AS servername, CAST(port AS text) AS port \
             FROM tblPerdition WHERE \"user\" = $1"
        );
        assert_eq!(
            table_query("mysql://h/db", &t).unwrap(),
            "SELECT `servername` AS servername, `port` AS port FROM `tblPerdition` WHERE `user` = ?"
        );
        assert!(table_query("sqlite:///tmp/x.db", &t)
            .unwrap()
            .ends_with("\"user\" = ?"));
    }

    #[test]
    fn configured_names_cannot_carry_sql() {
        let t = Table {
            table: "t; DROP TABLE x".into(),
            ..Table::default()
        };
        assert!(table_query("mysql://h/db", &t).is_err());
        assert!(dialect("oracle://x").is_err());
    }

    #[test]
    fn perditions_option_string() {
        let (url, table) = perdition_options("", false).unwrap();
        assert_eq!(url, "mysql://perdition:perdition@localhost/dbPerdition");
        assert_eq!(table.table, "tblPerdition");
        let (url, table) =
            perdition_options("db1,db2:5433:mail:routes:px:s3cr@t:host:login:p", true).unwrap();
        assert_eq!(url, "postgres://px:s3cr%40t@db1:5433/mail");
        assert_eq!(
            (
                table.table.as_str(),
                table.user_column.as_str(),
                table.server_column.as_str()
            ),
            ("routes", "login", "host")
        );
        assert!(perdition_options("h:notaport", false).is_err());
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
