//! Which database an SQL map's URL names: the one reader of its scheme, for the map (which
//! refuses others) and for Perdition's table query (written in that database's quoting).

/// A database an SQL map speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Postgres,
    Mysql,
    Sqlite,
}

/// A URL whose scheme names no database an SQL map speaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database URL scheme {0:?}: use postgres://, mysql:// or sqlite://")]
pub struct UnknownDatabase(pub String);

impl Database {
    /// The database `url` names by its scheme (`postgres://`, `mysql://`, `sqlite://`…).
    pub fn of(url: &str) -> Result<Database, UnknownDatabase> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Database::Postgres),
            "mysql" | "mariadb" => Ok(Database::Mysql),
            "sqlite" => Ok(Database::Sqlite),
            other => Err(UnknownDatabase(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_names_the_database() {
        assert_eq!(Database::of("postgresql://h/db"), Ok(Database::Postgres));
        assert_eq!(Database::of("mariadb://h/db"), Ok(Database::Mysql));
        assert_eq!(Database::of("sqlite:///x.db"), Ok(Database::Sqlite));
        assert_eq!(
            Database::of("oracle://x").unwrap_err().to_string(),
            "database URL scheme \"oracle\": use postgres://, mysql:// or sqlite://"
        );
    }
}
