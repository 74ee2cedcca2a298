//! The map library `-M` names, read with `-m`, as the native map that does what it did.

use super::super::{MapConfig, MapKind};
use super::error::PerditionError;
use super::sql::{perdition_options, table_query};

/// Perdition's default LDAP directory (`perditiondb_ldap.h`).
pub const DEFAULT_LDAP_URL: &str =
    "ldap://localhost/ou=mailbox,dc=nodomain?username,mailhost,port?one?(uid=%s)";

/// Perdition's default map: the GDBM database `makegdbm` builds from the flat popmap.
pub const DEFAULT_GDBM_PATH: &str = "/etc/perdition/popmap.gdbm.db";

/// The regular expressions of `libperditiondb_posix_regex`.
pub const DEFAULT_POPMAP_RE_PATH: &str = "/etc/perdition/popmap.re";

/// The map library named by `-M`, read with `-m`, as Perdition would.
pub fn map(
    library: Option<&str>,
    option: Option<&str>,
    username_from_database: bool,
) -> Result<Option<MapConfig>, PerditionError> {
    let library = match library {
        Some("") => return Ok(None),
        // No -M: Perdition's default, its GDBM database.
        None => "libperditiondb_gdbm.so.0",
        Some(l) => l,
    };
    let file = library.rsplit('/').next().unwrap_or(library);
    let mut map = MapConfig {
        username_from_map: username_from_database,
        ..unset(MapKind::Gdbm)
    };
    for (library, postgres) in [
        ("libperditiondb_mysql", false),
        ("libperditiondb_postgresql", true),
    ] {
        if file.starts_with(library) {
            let (url, table) = perdition_options(option.unwrap_or(""), postgres)?;
            map.query = Some(table_query(&url, &table)?);
            map.url = Some(url);
            map.kind = MapKind::Sql;
            return Ok(Some(map));
        }
    }
    // `-m` when given, else the library's own default.
    let option_or = |default: &str| {
        option
            .filter(|o| !o.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    if file.starts_with("libperditiondb_ldap") {
        map.kind = MapKind::Ldap;
        map.url = Some(option_or(DEFAULT_LDAP_URL));
        return Ok(Some(map));
    }
    (map.kind, map.path) = if file.starts_with("libperditiondb_posix_regex") {
        (
            MapKind::PopmapRe,
            Some(option_or(DEFAULT_POPMAP_RE_PATH).into()),
        )
    } else if file.starts_with("libperditiondb_gdbm") {
        (MapKind::Gdbm, Some(option_or(DEFAULT_GDBM_PATH).into()))
    } else {
        return Err(PerditionError::MapLibrary {
            library: library.to_string(),
            why: not_available(file),
        });
    };
    Ok(Some(map))
}

/// Why a map library Portcullis has no map for cannot be had, and what to do instead.
fn not_available(file: &str) -> &'static str {
    match file.split('.').next().unwrap_or(file) {
        "libperditiondb_bdb" => {
            "the Berkeley DB database is not read; build the GDBM one (makegdbm) or use the \
             flat popmap text with the native [listener.map] kind = \"popmap\""
        }
        "libperditiondb_nis" => "NIS is not supported; export the map to a popmap file",
        "libperditiondb_daemon" | "libperditiondb_daemon_base" => {
            "the external map daemon is not supported"
        }
        _ => "unknown map library",
    }
}

/// A map of `kind` with nothing set: Perdition's libraries have no cache, no master user,
/// no TLS settings of their own.
fn unset(kind: MapKind) -> MapConfig {
    MapConfig {
        kind,
        path: None,
        url: None,
        query: None,
        headers: Default::default(),
        bind_dn: None,
        bind_password: None,
        ca_file: None,
        starttls: false,
        timeout: None,
        cache_seconds: None,
        negative_cache_seconds: None,
        cache_size: None,
        master_user: None,
        master_password: None,
        master_separator: None,
        username_from_map: false,
        source: Vec::new(),
    }
}
