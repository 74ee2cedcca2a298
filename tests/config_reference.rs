//! The configuration reference (docs/src/configuration.md) checked against the configuration
//! types: every key the code accepts is documented there with its default, every documented
//! key is accepted, the documented defaults are the code's, and a file made of every
//! documented key parses.
//!
//! What the code accepts is read from the JSON schema of `Config` (`schemars`, which follows
//! the serde attributes: renames, defaults, skipped fields, untagged enums). What the manual
//! says is read from its reference lines, one per key, under a heading that names the table:
//!
//! ```text
//! ## `[limits]`
//! - `login_timeout` — default `30` — seconds a client has to log in
//! - `backend_timeout` — unset, e.g. `15` — the former single setting
//! - `protocol` — required, e.g. `"imap"` — imap, pop3, managesieve or submission
//! ```
//!
//! The values are TOML. "unset" means the key is absent unless given (the text says what
//! that means); "required" means the table is refused without it.

use std::collections::{BTreeMap, BTreeSet};

use portcullis::config::Config;
use serde_json::Value as Json;
use toml::Value as Toml;

const REFERENCE: &str = "docs/src/configuration.md";

/// A table of the configuration: its dotted path and whether it is an array of tables
/// (`[[listener]]`) or a plain one (`[listener.backend]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Table {
    path: String,
    array: bool,
}

impl Table {
    fn heading(&self) -> String {
        match self.array {
            true => format!("[[{}]]", self.path),
            false => format!("[{}]", self.path),
        }
    }

    fn child(&self, name: &str, array: bool) -> Table {
        let path = match self.path.is_empty() {
            true => name.to_string(),
            false => format!("{}.{name}", self.path),
        };
        Table { path, array }
    }
}

/// What the code accepts in one table.
#[derive(Debug, Default)]
struct SchemaTable {
    /// Each key and the default the schema knows for it (`None`: it knows none).
    keys: BTreeMap<String, Option<Json>>,
    required: BTreeSet<String>,
}

/// What the manual says about one key.
#[derive(Debug, Clone)]
enum Documented {
    Default(String),
    Unset(Option<String>),
    Required(Option<String>),
}

impl Documented {
    /// The value a file made of every documented key gives it.
    fn sample(&self) -> Option<&str> {
        match self {
            Documented::Default(value) => Some(value),
            Documented::Unset(example) | Documented::Required(example) => example.as_deref(),
        }
    }
}

// ---- the schema ----

fn schema() -> Json {
    serde_json::to_value(schemars::schema_for!(Config)).expect("the schema serialises")
}

/// The schema a `$ref` points at, or the schema itself.
fn resolve<'a>(root: &'a Json, schema: &'a Json) -> &'a Json {
    match schema.get("$ref").and_then(Json::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default();
            &root["$defs"][name]
        }
        None => schema,
    }
}

/// The alternatives a value may take (`anyOf`/`oneOf`, an `Option`'s `null`), resolved.
fn alternatives<'a>(root: &'a Json, schema: &'a Json) -> Vec<&'a Json> {
    let schema = resolve(root, schema);
    let listed = ["anyOf", "oneOf"]
        .iter()
        .find_map(|k| schema.get(*k).and_then(Json::as_array));
    match listed {
        Some(list) => list.iter().map(|s| resolve(root, s)).collect(),
        None => vec![schema],
    }
}

fn is_table(schema: &Json) -> bool {
    schema.get("properties").is_some()
}

/// Every table of the configuration with its keys, walking the schema from `Config`.
fn schema_tables() -> BTreeMap<Table, SchemaTable> {
    let root = schema();
    let mut tables = BTreeMap::new();
    let top = Table {
        path: String::new(),
        array: false,
    };
    walk(&root, &root, &top, &mut tables);
    let outside = tables.remove(&top).map(|t| t.keys).unwrap_or_default();
    assert!(outside.is_empty(), "keys outside any table: {outside:?}");
    tables
}

fn walk(root: &Json, object: &Json, table: &Table, tables: &mut BTreeMap<Table, SchemaTable>) {
    let entry = tables.entry(table.clone()).or_default();
    entry.required = object["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    let Some(properties) = object["properties"].as_object() else {
        return;
    };
    for (name, property) in properties {
        // A key may be a table (a section), an array of tables (`[[...]]`), a value, or some
        // of these at once (a pool's servers: "host:port" strings or tables).
        let mut a_value = false;
        for option in alternatives(root, property) {
            if is_table(option) {
                walk(root, option, &table.child(name, false), tables);
            } else if let Some(items) = option.get("items") {
                for item in alternatives(root, items) {
                    match is_table(item) {
                        true => walk(root, item, &table.child(name, true), tables),
                        false => a_value = true,
                    }
                }
            } else if option.get("type") != Some(&Json::from("null")) {
                a_value = true;
            }
        }
        if a_value {
            let default = property.get("default").cloned();
            let entry = tables.entry(table.clone()).or_default();
            entry.keys.insert(name.clone(), default);
        }
    }
}

// ---- the manual ----

fn reference_text() -> String {
    let path = format!("{}/{REFERENCE}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The table a heading names: `` ## `[listener.map]` `` → `listener.map`.
fn heading_table(line: &str) -> Option<Table> {
    let name = line.trim_start_matches('#').trim().strip_prefix('`')?;
    let name = name.strip_suffix('`')?;
    if let Some(path) = name.strip_prefix("[[").and_then(|n| n.strip_suffix("]]")) {
        return Some(Table {
            path: path.into(),
            array: true,
        });
    }
    let path = name.strip_prefix('[')?.strip_suffix(']')?;
    Some(Table {
        path: path.into(),
        array: false,
    })
}

/// One reference line: `` - `key` — default `value` — text `` (or `unset`/`required`, with
/// `, e.g. `value``).
fn reference_line(line: &str) -> Result<(String, Documented), String> {
    let rest = line.strip_prefix("- `").ok_or("not a reference line")?;
    let (key, rest) = rest.split_once("` — ").ok_or("no \"` — \" after the key")?;
    let (what, text) = rest.split_once(" — ").ok_or("no \" — \" before the text")?;
    if text.trim().is_empty() {
        return Err("no text".into());
    }
    let quoted = |s: &str| -> Result<String, String> {
        s.strip_prefix('`')
            .and_then(|s| s.strip_suffix('`'))
            .map(String::from)
            .ok_or(format!("{s:?} is not a `value`"))
    };
    let example = |s: &str| -> Result<Option<String>, String> {
        match s {
            "" => Ok(None),
            s => quoted(
                s.strip_prefix(", e.g. ")
                    .ok_or(format!("{s:?}: not \", e.g. `value`\""))?,
            )
            .map(Some),
        }
    };
    let documented = if let Some(value) = what.strip_prefix("default ") {
        Documented::Default(quoted(value)?)
    } else if let Some(rest) = what.strip_prefix("unset") {
        Documented::Unset(example(rest)?)
    } else if let Some(rest) = what.strip_prefix("required") {
        Documented::Required(example(rest)?)
    } else {
        return Err(format!("{what:?}: neither default `…`, unset nor required"));
    };
    Ok((key.to_string(), documented))
}

/// Every table the manual documents, with its keys.
fn documented_tables() -> BTreeMap<Table, BTreeMap<String, Documented>> {
    let text = reference_text();
    let mut tables: BTreeMap<Table, BTreeMap<String, Documented>> = BTreeMap::new();
    let mut current: Option<Table> = None;
    let mut mistakes = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            current = heading_table(line);
            if let Some(table) = &current {
                if tables.insert(table.clone(), BTreeMap::new()).is_some() {
                    mistakes.push(format!("line {}: {} twice", number + 1, table.heading()));
                }
            }
            continue;
        }
        if !line.starts_with("- `") {
            continue;
        }
        let Some(table) = &current else {
            mistakes.push(format!(
                "line {}: a key outside a table's section",
                number + 1
            ));
            continue;
        };
        match reference_line(line) {
            Ok((key, documented)) => {
                let keys = tables.get_mut(table).expect("inserted at its heading");
                if keys.insert(key.clone(), documented).is_some() {
                    mistakes.push(format!("line {}: {key} twice", number + 1));
                }
            }
            Err(why) => mistakes.push(format!("line {}: {why}: {line}", number + 1)),
        }
    }
    assert!(
        mistakes.is_empty(),
        "{REFERENCE} has reference lines that do not read:\n  {}",
        mistakes.join("\n  ")
    );
    tables
}

fn toml_value(text: &str) -> Result<Toml, String> {
    let table: toml::Table =
        toml::from_str(&format!("value = {text}")).map_err(|e| format!("{text}: {e}"))?;
    Ok(table["value"].clone())
}

// ---- the checks ----

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let code = schema_tables();
    let manual = documented_tables();
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    for (table, accepted) in &code {
        let Some(documented) = manual.get(table) else {
            missing.push(format!(
                "the table {} (keys: {:?})",
                table.heading(),
                accepted.keys.keys()
            ));
            continue;
        };
        for key in accepted.keys.keys() {
            if !documented.contains_key(key) {
                missing.push(format!("{} {key}", table.heading()));
            }
        }
        for key in documented.keys() {
            if !accepted.keys.contains_key(key) {
                extra.push(format!("{} {key}", table.heading()));
            }
        }
    }
    for table in manual.keys() {
        if !code.contains_key(table) {
            extra.push(format!("the table {}", table.heading()));
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{REFERENCE} and the configuration types disagree.\n\
         Accepted by the code, not documented (add a line `- `key` — default `…` — text` under \
         the table's heading):\n  {}\n\
         Documented, not accepted by the code:\n  {}",
        missing.join("\n  "),
        extra.join("\n  ")
    );
}

#[test]
fn the_documented_defaults_are_the_codes() {
    let code = schema_tables();
    let manual = documented_tables();
    let mut wrong = Vec::new();
    for (table, documented) in &manual {
        let Some(accepted) = code.get(table) else {
            continue; // named by the test above
        };
        for (key, says) in documented {
            let Some(schema_default) = accepted.keys.get(key) else {
                continue;
            };
            let place = format!("{} {key}", table.heading());
            let required = accepted.required.contains(key);
            match says {
                Documented::Required(_) if !required => wrong.push(format!(
                    "{place}: documented as required, the code has a default"
                )),
                Documented::Default(_) | Documented::Unset(_) if required => wrong.push(format!(
                    "{place}: required by the code, documented as optional"
                )),
                Documented::Default(value) => match (toml_value(value), schema_default) {
                    (Err(e), _) => wrong.push(format!("{place}: the default is no TOML: {e}")),
                    (Ok(_), Some(Json::Null)) => wrong.push(format!(
                        "{place}: documented default `{value}`, the code leaves it unset"
                    )),
                    (Ok(value), Some(expected)) => {
                        let value = serde_json::to_value(&value).expect("TOML is JSON");
                        if value != *expected {
                            wrong.push(format!(
                                "{place}: documented default {value}, the code's is {expected}"
                            ));
                        }
                    }
                    (Ok(_), None) => {} // checked by parsing, below
                },
                Documented::Unset(_) => match schema_default {
                    Some(Json::Null) | None => {}
                    Some(expected) => wrong.push(format!(
                        "{place}: documented as unset, the code's default is {expected}"
                    )),
                },
                Documented::Required(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{REFERENCE}:\n  {}", wrong.join("\n  "));
}

/// A document with `value` at `key` of `table`, the tables above it made with their required
/// keys (from the manual's examples) and required tables.
struct Builder<'a> {
    code: &'a BTreeMap<Table, SchemaTable>,
    manual: &'a BTreeMap<Table, BTreeMap<String, Documented>>,
}

impl Builder<'_> {
    /// The table at `path` in `document`, made (with its required contents) when missing.
    fn table_at<'d>(&self, document: &'d mut toml::Table, path: &str) -> &'d mut toml::Table {
        let mut here = document;
        let mut prefix = String::new();
        for part in path.split('.').filter(|p| !p.is_empty()) {
            prefix = match prefix.is_empty() {
                true => part.to_string(),
                false => format!("{prefix}.{part}"),
            };
            let array = self.code.keys().any(|t| t.path == prefix && t.array);
            let made = !here.contains_key(part);
            if made {
                let fresh = Toml::Table(self.required_contents(&prefix));
                let value = if array {
                    Toml::Array(vec![fresh])
                } else {
                    fresh
                };
                here.insert(part.to_string(), value);
            }
            let slot = here.get_mut(part).expect("inserted above");
            here = match slot {
                Toml::Array(items) => items[0].as_table_mut().expect("an array of tables"),
                Toml::Table(table) => table,
                other => panic!("{prefix} is a value ({other}) and a table"),
            };
        }
        here
    }

    /// The required keys of the table at `path`, with the manual's examples, and its required
    /// tables.
    fn required_contents(&self, path: &str) -> toml::Table {
        let mut contents = toml::Table::new();
        let (table, accepted) = self
            .code
            .iter()
            .find(|(t, _)| t.path == path)
            .unwrap_or_else(|| panic!("no table {path} in the schema"));
        for name in &accepted.required {
            if accepted.keys.contains_key(name) {
                let example = self
                    .manual
                    .get(table)
                    .and_then(|keys| keys.get(name))
                    .and_then(Documented::sample)
                    .unwrap_or_else(|| {
                        panic!("{} {name}: required, and no example", table.heading())
                    });
                contents.insert(
                    name.clone(),
                    toml_value(example).expect("an example in TOML"),
                );
            } else {
                let child = format!("{path}.{name}");
                let array = self.code.keys().any(|t| t.path == child && t.array);
                let fresh = Toml::Table(self.required_contents(&child));
                let value = if array {
                    Toml::Array(vec![fresh])
                } else {
                    fresh
                };
                contents.insert(name.clone(), value);
            }
        }
        contents
    }
}

fn parse(document: &toml::Table) -> Result<Config, String> {
    let text = toml::to_string(document).expect("a TOML table prints");
    Config::from_toml(&text).map_err(|e| format!("{e}\n--- the file:\n{text}"))
}

#[test]
fn a_documented_default_changes_nothing() {
    let code = schema_tables();
    let manual = documented_tables();
    let builder = Builder {
        code: &code,
        manual: &manual,
    };
    let mut wrong = Vec::new();
    for (table, documented) in &manual {
        if !code.contains_key(table) {
            continue; // named by the first test
        }
        for (key, says) in documented {
            let Documented::Default(value) = says else {
                continue;
            };
            let place = format!("{} {key}", table.heading());
            let mut without = toml::Table::new();
            builder.table_at(&mut without, &table.path);
            let mut with = without.clone();
            let Ok(value) = toml_value(value) else {
                continue; // named by the test above
            };
            builder
                .table_at(&mut with, &table.path)
                .insert(key.clone(), value);
            match (parse(&without), parse(&with)) {
                (Ok(a), Ok(b)) if a == b => {}
                (Ok(_), Ok(_)) => wrong.push(format!(
                    "{place}: giving the documented default changes the configuration"
                )),
                (Err(e), _) | (_, Err(e)) => wrong.push(format!("{place}: does not parse: {e}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{REFERENCE}:\n  {}", wrong.join("\n  "));
}

#[test]
fn a_file_of_every_documented_key_parses() {
    let code = schema_tables();
    let manual = documented_tables();
    let builder = Builder {
        code: &code,
        manual: &manual,
    };
    let mut document = toml::Table::new();
    let mut without_value = Vec::new();
    for (table, documented) in &manual {
        for (key, says) in documented {
            // A key that is an array of tables too (a pool's `servers`) gets its table form.
            if code.contains_key(&table.child(key, true)) {
                continue;
            }
            let Some(sample) = says.sample() else {
                without_value.push(format!("{} {key}", table.heading()));
                continue;
            };
            let value = toml_value(sample).unwrap_or_else(|e| panic!("{REFERENCE}: {e}"));
            builder
                .table_at(&mut document, &table.path)
                .insert(key.clone(), value);
        }
    }
    assert!(
        without_value.is_empty(),
        "{REFERENCE}: unset keys need an example (`unset, e.g. `value``):\n  {}",
        without_value.join("\n  ")
    );
    if let Err(e) = parse(&document) {
        panic!("{REFERENCE}: every documented key with its default or example does not parse: {e}");
    }
}
