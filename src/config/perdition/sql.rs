//! Perdition's SQL map libraries (`libperditiondb_mysql`, `libperditiondb_postgresql`): the
//! `-m` string that names the database, and the query that reads Perdition's table, which the
//! native `sql` map reads too when it is given no query of its own.

use crate::config::database::{Database, UnknownDatabase};

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

/// Why Perdition's table cannot be read with a query.
#[derive(Debug, thiserror::Error)]
pub enum TableQueryError {
    #[error("{0:?} is not a plain SQL identifier (letters, digits, _)")]
    NotAnIdentifier(String),
    #[error(transparent)]
    UnknownScheme(#[from] UnknownDatabase),
}

/// For callers that still pass errors on as text (the map factory).
impl From<TableQueryError> for String {
    fn from(e: TableQueryError) -> String {
        e.to_string()
    }
}

/// What is wrong with the `-m` string of an SQL map library.
#[derive(Debug, thiserror::Error)]
pub enum MapLibraryOptError {
    /// Not quoted: the string holds the database's password.
    #[error("map_library_opt: {0} fields, more than 9")]
    TooManyFields(usize),
    #[error("map_library_opt host {host:?}: {source}")]
    Host {
        host: String,
        #[source]
        source: url::ParseError,
    },
    #[error("map_library_opt user {0:?}")]
    User(String),
    #[error("map_library_opt port {0:?}")]
    NotAPort(String),
    #[error("map_library_opt port {0}")]
    PortRefused(u16),
}

/// An identifier from the configuration, checked so that it can be written into SQL text.
fn identifier(name: &str) -> Result<&str, TableQueryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some(name)
        .ok_or_else(|| TableQueryError::NotAnIdentifier(name.to_string()))
}

/// Perdition's query for its table, in the database's own quoting and placeholder.
pub fn table_query(url: &str, table: &Table) -> Result<String, TableQueryError> {
    let [t, u, s, p] = [
        &table.table,
        &table.user_column,
        &table.server_column,
        &table.port_column,
    ]
    .map(|name| identifier(name));
    let (t, u, s, p) = (t?, u?, s?, p?);
    Ok(match Database::of(url)? {
        // Unquoted names fold to lower case, as Perdition's tables were created; `user` is a
        // reserved word and must be quoted. Perdition's own table keeps `char(n)` columns,
        // which sqlx's Any driver cannot read: cast to text, which also drops the blanks that
        // pad a `char(n)` value to its width (Perdition trims them too).
        Database::Postgres => {
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
        Database::Mysql => {
            format!("SELECT `{s}` AS servername, `{p}` AS port FROM `{t}` WHERE `{u}` = ?")
        }
        Database::Sqlite => {
            format!("SELECT \"{s}\" AS servername, \"{p}\" AS port FROM \"{t}\" WHERE \"{u}\" = ?")
        }
    })
}

/// Perdition's `-m` for its MySQL and PostgreSQL libraries:
/// `dbhost[,dbhost2…]:dbport:dbname:dbtable:dbuser:dbpwd:srvcol:usercol:portcol`, empty fields
/// taking Perdition's defaults. Only the first host is used.
pub fn perdition_options(
    option: &str,
    postgres: bool,
) -> Result<(String, Table), MapLibraryOptError> {
    let fields: Vec<&str> = option.split(':').collect();
    if fields.len() > 9 {
        return Err(MapLibraryOptError::TooManyFields(fields.len()));
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
    let mut url = url::Url::parse(&format!("{scheme}://{host}/")).map_err(|source| {
        MapLibraryOptError::Host {
            host: host.to_string(),
            source,
        }
    })?;
    url.set_username(user)
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| MapLibraryOptError::User(user.to_string()))?;
    set_port(&mut url, field(1, "0"))?;
    url.set_path(database);
    Ok((url.to_string(), table))
}

/// The `dbport` field; 0 is the database's own port.
fn set_port(url: &mut url::Url, port: &str) -> Result<(), MapLibraryOptError> {
    if port == "0" {
        return Ok(());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| MapLibraryOptError::NotAPort(port.to_string()))?;
    url.set_port(Some(port))
        .map_err(|()| MapLibraryOptError::PortRefused(port))
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
}
