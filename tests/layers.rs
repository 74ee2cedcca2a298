//! The crate's layers, as the README's "How it works" draws them, read from the code's own
//! `crate::` paths (test modules left out): `value` imports nothing of the crate, `config`
//! only `value`, and no module imports one that imports it back, at the top and within each
//! folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `#[cfg(test)]` items and without `//` comments.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            let (mut depth, mut opened) = (0i32, false);
            i += 1;
            while i < lines.len() {
                depth +=
                    lines[i].matches('{').count() as i32 - lines[i].matches('}').count() as i32;
                opened |= lines[i].contains('{');
                let one_line_item = !opened && lines[i].trim_end().ends_with(';');
                i += 1;
                if one_line_item || (opened && depth <= 0) {
                    break;
                }
            }
            continue;
        }
        let line = lines[i].split("//").next().unwrap_or_default();
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

/// The names that follow `prefix` in `code` (`crate::` gives `map` for `crate::map::x` and
/// every name in `crate::{a, b::c}`).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inside = &group[..group.find('}').unwrap_or(group.len())];
            for item in inside.split(',') {
                names.insert(word(item.trim()));
            }
        } else {
            names.insert(word(rest));
        }
    }
    names.remove("");
    names
}

/// The module a file belongs to within `dir`: its first path component below it.
fn module_of(dir: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(dir).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Edges between the top-level modules of the crate.
fn crate_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let module = module_of(src, &file);
        if module == "main" || module == "lib" {
            continue;
        }
        let code = code_of(&fs::read_to_string(&file).unwrap());
        let used = names_after(&code, "crate::");
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(used.into_iter().filter(|m| *m != module));
    }
    graph
}

/// Edges between the files (and sub-folders) of one folder, through `crate::<folder>::x` and
/// `super::x` from its direct children.
fn folder_graph(src: &Path, folder: &str) -> Graph {
    let dir = src.join(folder);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let members: BTreeSet<String> = files.iter().map(|f| module_of(&dir, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&dir, file);
        let code = code_of(&fs::read_to_string(file).unwrap());
        let mut used = names_after(&code, &format!("crate::{folder}::"));
        let direct_child = file.parent() == Some(dir.as_path());
        if direct_child && module != "mod" {
            used.extend(names_after(&code, "super::"));
        }
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(
            used.into_iter()
                .filter(|m| *m != module && members.contains(m) && m != "mod"),
        );
    }
    graph
}

/// A cycle through `from`, if there is one: the modules on it.
fn cycle(graph: &Graph, from: &str) -> Option<Vec<String>> {
    fn walk(graph: &Graph, at: &str, target: &str, path: &mut Vec<String>) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == target {
                return true;
            }
            if !path.contains(next) {
                path.push(next.clone());
                if walk(graph, next, target, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path).then_some(path)
}

fn no_cycles(graph: &Graph, place: &str) {
    for module in graph.keys() {
        if let Some(cycle) = cycle(graph, module) {
            panic!(
                "an import cycle in {place}: {} -> {module}",
                cycle.join(" -> ")
            );
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn value_imports_nothing_and_config_only_value() {
    let graph = crate_graph(&src());
    assert_eq!(
        graph.get("value").cloned().unwrap_or_default(),
        BTreeSet::new()
    );
    let config = graph.get("config").cloned().unwrap_or_default();
    assert!(
        config.iter().all(|m| m == "value"),
        "config imports {config:?}; it may import only value"
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = src();
    no_cycles(&crate_graph(&src), "the crate");
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let folder = path.file_name().unwrap().to_string_lossy().to_string();
            no_cycles(&folder_graph(&src, &folder), &format!("src/{folder}"));
        }
    }
}

#[test]
fn the_reader_of_imports_sees_what_it_must() {
    // The reader itself, on code shaped like the crate's: a cycle and a grouped import.
    let code = code_of(
        "use crate::{map::x, tls};\n// crate::guard in a comment\n#[cfg(test)]\nmod tests {\n    use crate::server;\n}\nfn f() { crate::log::line(); }\n",
    );
    let names = names_after(&code, "crate::");
    let expected: BTreeSet<String> = ["map", "tls", "log"].map(String::from).into();
    assert_eq!(names, expected);
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert!(cycle(&graph, "a").is_some());
    graph.get_mut("b").unwrap().clear();
    assert!(cycle(&graph, "a").is_none());
}
