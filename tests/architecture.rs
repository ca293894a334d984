//! The layers of `src/` are what `src/lib.rs` says: every module imports only modules of the
//! layers below its own, so there is no import circle and no upward import; every module is
//! placed in a layer; and the crate documentation's `# Layout` names every module.
//!
//! The check reads the source as text: every `crate::NAME` outside comments and outside test
//! code (`tests.rs`, `*_tests.rs`, and what follows `#[cfg(test)]` at the top of a file).

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, top first. A module may import the modules of any layer below its own, none of
/// its own layer but itself, and none above.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["server"],
    &["console"],
    &["api"],
    &["auth"],
    &["connections"],
    &["cluster"],
    &["logging"],
    &["config"],
    &["registry"],
    &["error"],
    &["store"],
    &["history"],
    &["metrics", "clock", "grpc_codec", "runtime", "proto"],
    &["core"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// An import of `target` by a file of `module` that the layers forbid.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    module: String,
    target: String,
}

/// The top-level module a file under `src/` belongs to (`store/sqlite/mod.rs`: `store`).
fn module_of(relative: &str) -> Option<String> {
    let first = relative.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "lib" | "main" => None,
        name => Some(name.to_owned()),
    }
}

fn is_test_file(relative: &str) -> bool {
    let file = relative.rsplit('/').next().unwrap_or(relative);
    file == "tests.rs" || file.ends_with("_tests.rs")
}

/// Every `crate::NAME` the non-test code of `text` names, with its line number.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        // Test code at the end of a file (`#[cfg(test)]` then `mod tests`) may import anything.
        if line.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|(_, next)| next.starts_with("mod ") || next.starts_with("#[path"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` names several modules at once.
        if let Some(group) = trimmed
            .strip_prefix("use crate::{")
            .or_else(|| trimmed.strip_prefix("pub use crate::{"))
        {
            for name in group.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    found.push((number + 1, name.to_owned()));
                }
            }
        }
    }
    found
}

/// The violations among `files` (paths relative to `src/`, and their text).
fn check(files: &BTreeMap<String, String>) -> (Vec<Violation>, Vec<String>) {
    let mut violations = Vec::new();
    let mut unplaced = Vec::new();
    for (relative, text) in files {
        if is_test_file(relative) {
            continue;
        }
        let Some(module) = module_of(relative) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            unplaced.push(module);
            continue;
        };
        for (line, target) in imports(text) {
            if target == module || target == "self" || target == "super" {
                continue;
            }
            let allowed = layer_of(&target).is_some_and(|theirs| theirs > own);
            if !allowed {
                violations.push(Violation {
                    file: relative.clone(),
                    line,
                    module: module.clone(),
                    target,
                });
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    (violations, unplaced)
}

fn read_sources(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            read_sources(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            files.insert(relative, std::fs::read_to_string(&path).expect("source"));
        }
    }
}

fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_sources(&root, &root, &mut files);
    files
}

#[test]
fn no_module_imports_one_above_it_and_every_module_has_a_layer() {
    let files = sources();
    let (violations, unplaced) = check(&files);
    assert!(
        unplaced.is_empty(),
        "modules in no layer of tests/architecture.rs (place each, and in src/lib.rs's # Layout): {unplaced:?}"
    );
    assert!(
        violations.is_empty(),
        "imports against the layers (a module may import only the layers below its own):\n{}",
        violations
            .iter()
            .map(|v| format!(
                "  src/{}:{}: {} imports {}",
                v.file, v.line, v.module, v.target
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_crate_layout_names_every_module() {
    let files = sources();
    let lib = &files["lib.rs"];
    let layout: String = lib
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .skip_while(|line| !line.contains("# Layout"))
        .collect::<Vec<_>>()
        .join("\n");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(['{', ';', ' ']))
        .collect();
    assert!(!declared.is_empty(), "lib.rs declares its modules");
    for module in declared {
        assert!(
            layout.contains(&format!("[`{module}`]")),
            "src/lib.rs's # Layout does not name [`{module}`]"
        );
        assert!(
            layer_of(module).is_some(),
            "{module} is in no layer of tests/architecture.rs"
        );
    }
}

/// The check itself: an import planted against the layers is reported, one along them is not.
#[test]
fn a_planted_upward_import_is_caught() {
    let mut files = BTreeMap::new();
    files.insert(
        "store/mod.rs".to_owned(),
        "//! A doc that mentions crate::api is not an import.\nuse crate::core::Timestamp;\nuse crate::registry::Registry;\n".to_owned(),
    );
    files.insert(
        "metrics.rs".to_owned(),
        "fn f() { let _ = crate::server::serve; }\n#[cfg(test)]\nmod tests {\n    use crate::api::Gate;\n}\n".to_owned(),
    );
    files.insert(
        "registry/gate.rs".to_owned(),
        "use crate::{core, store};\nuse crate::{config, history};\n".to_owned(),
    );
    files.insert(
        "registry/tests.rs".to_owned(),
        "use crate::server;\n".to_owned(),
    );
    files.insert("newcomer.rs".to_owned(), "use crate::core;\n".to_owned());
    let (violations, unplaced) = check(&files);
    let found: Vec<(&str, usize, &str)> = violations
        .iter()
        .map(|v| (v.file.as_str(), v.line, v.target.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("metrics.rs", 1, "server"),
            ("registry/gate.rs", 2, "config"),
            ("store/mod.rs", 3, "registry"),
        ]
    );
    assert_eq!(unplaced, vec!["newcomer".to_owned()]);
}
