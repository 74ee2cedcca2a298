//! The one place a map's configuration becomes a map: each kind's constructor, then the cache
//! in front when its settings keep answers. A new map kind is one file beside this one, its
//! kind in the configuration, and one arm here.

use crate::config::perdition::{table_query, Table};
use crate::config::{MapConfig, MapKind};

use super::cache::{CacheSettings, CachedMap};
use super::flat_file::FlatFile;
use super::gdbm::GdbmMap;
use super::http::HttpMap;
use super::ldap::{LdapMap, LdapSettings};
use super::pool::Pool;
use super::popmap_re::PopmapRe;
use super::reload::Reloadable;
use super::sql::{SqlMap, SqlSetupError};
use super::{Map, MapSetupError};

/// Read (or, for a server, prepare) the map `m` describes, with its cache; what reading it
/// noticed goes to `warnings`.
pub fn build(m: &MapConfig, warnings: &mut Vec<String>) -> Result<Box<dyn Map>, MapSetupError> {
    let settings = CacheSettings {
        positive: m.cache_for(),
        negative: m.negative_cache_for(),
        size: m.cache_entries(),
    };
    let map = uncached(m, warnings)?;
    Ok(
        if settings.positive.is_zero() && settings.negative.is_zero() {
            map
        } else {
            Box::new(CachedMap::new(map, settings))
        },
    )
}

fn uncached(m: &MapConfig, warnings: &mut Vec<String>) -> Result<Box<dyn Map>, MapSetupError> {
    let path = || m.path.as_deref().ok_or(MapSetupError::NoPath);
    let url = || m.url.as_deref().unwrap_or_default();
    Ok(match m.kind {
        MapKind::PopmapRe => {
            let (map, notes) = Reloadable::load(path()?, PopmapRe::load)?;
            warnings.extend(notes);
            Box::new(map)
        }
        MapKind::Popmap => {
            let (map, notes) = Reloadable::load(path()?, FlatFile::load)?;
            warnings.extend(notes);
            Box::new(map)
        }
        MapKind::Gdbm => Box::new(GdbmMap::new(path()?)),
        MapKind::Ldap => {
            let settings = LdapSettings {
                bind_dn: m.bind_dn.clone(),
                bind_password: m.bind_password.clone(),
                ca_file: m.ca_file.clone(),
                starttls: m.starttls,
                timeout: m.lookup_timeout(),
            };
            Box::new(LdapMap::new(url(), settings)?)
        }
        MapKind::Sql => {
            let query = match &m.query {
                Some(query) => query.clone(),
                None => table_query(url(), &Table::default()).map_err(SqlSetupError::from)?,
            };
            Box::new(SqlMap::new(url(), query, m.lookup_timeout())?)
        }
        MapKind::Http => {
            let headers: Vec<(String, String)> = m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Box::new(HttpMap::new(url(), &headers, m.lookup_timeout())?)
        }
        MapKind::Pool => Box::new(Pool::new(m)?),
    })
}
