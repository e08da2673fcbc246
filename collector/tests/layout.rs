//! The agent's layout stays readable: its folders import only the ones before them in
//! [`ORDER`] (the data flow), no import cycle between its modules, and no module over
//! [`MAX_CODE_LINES`] lines of code (tests, comments and blank lines aside).
//!
//! A module's imports are every `crate::` and `super::` path in its code outside its
//! `#[cfg(test)]` module, resolved to the deepest module of this crate they name. Run with
//! `--nocapture` to see every module's size and imports.
// A test: a source file that cannot be read is a failed test.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const MAX_CODE_LINES: usize = 500;

/// The agent's top-level modules in data-flow order: each may use only those before it.
const ORDER: &[&str] = &[
    "sync",
    "shutdown",
    "kernel",
    "targets",
    "telemetry",
    "export",
    "cli",
    "config",
    "logging",
    "agent",
];

/// Module path (`targets::cgroup::watch`; "" for the crate root) -> its source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("main.rs") {
                continue; // main.rs is the binary's root, which sees the library as `collector::`
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut segments: Vec<String> = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
                segments.pop();
            }
            found.insert(segments.join("::"), path);
        }
    }
    found
}

/// The code of a module without its unit tests.
fn code(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .or_else(|| text.find("#[cfg(test)]\npub(crate) mod tests"))
        .map_or(text, |at| &text[..at])
}

/// `code` without its comments (a doc link is not an import), line by line.
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("http://") keeps the line; none of ours does.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn code_lines(code: &str) -> usize {
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

/// The paths after `prefix` (`crate::`), with brace groups expanded: `crate::{a, b::{c, d}}`
/// gives `a`, `b::c`, `b::d`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[at + prefix.len()..];
        if !preceded_by_ident {
            expand(rest, Vec::new(), &mut out);
        }
    }
    out
}

/// Expands the path tree at the start of `text` into `out`, each path prefixed by `base`.
fn expand(text: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let text_start = text.len() - text.trim_start().len();
    let mut pos = text_start;
    let mut path = base;
    loop {
        let rest = &text[pos..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut consumed = 1;
            let mut inner = group;
            loop {
                let used = expand(inner, path.clone(), out);
                consumed += used;
                inner = &inner[used..];
                let trimmed = skip_rename(inner);
                consumed += inner.len() - trimmed.len();
                inner = trimmed;
                match inner.chars().next() {
                    Some(',') => {
                        consumed += 1;
                        inner = &inner[1..];
                        if inner.trim_start().starts_with('}') {
                            let t = inner.trim_start();
                            consumed += inner.len() - t.len() + 1;
                            return pos + consumed;
                        }
                    }
                    Some('}') => return pos + consumed + 1,
                    _ => return pos + consumed,
                }
            }
        }
        let ident_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if ident_len == 0 {
            if !path.is_empty() {
                out.push(path);
            }
            return pos;
        }
        path.push(rest[..ident_len].to_owned());
        pos += ident_len;
        if text[pos..].starts_with("::") {
            pos += 2;
        } else {
            out.push(path);
            return pos;
        }
    }
}

/// `text` after white space and an `as name` rename, if there is one.
fn skip_rename(text: &str) -> &str {
    let trimmed = text.trim_start();
    match trimmed.strip_prefix("as ") {
        Some(rest) => {
            let rest = rest.trim_start();
            let name = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[name..].trim_start()
        }
        None => trimmed,
    }
}

/// The deepest known module that `path` (from the crate root) names; `super` steps up.
fn resolve(path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut normal: Vec<&str> = Vec::new();
    for segment in path {
        if segment == "super" {
            normal.pop();
        } else {
            normal.push(segment);
        }
    }
    (1..=normal.len())
        .rev()
        .map(|n| normal[..n].join("::"))
        .find(|m| known.contains_key(m))
}

/// Each module's imports of other modules of this crate.
fn imports(known: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    known
        .iter()
        .map(|(module, file)| {
            let text = fs::read_to_string(file).unwrap();
            let code = without_comments(code(&text));
            let code = code.as_str();
            let is_mod_file = file.ends_with("mod.rs") || file.ends_with("lib.rs");
            let mut segments: Vec<String> = module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            // `super` of a.rs in folder x is x; of x/mod.rs it is x's parent.
            let parent: Vec<String> = if is_mod_file || segments.is_empty() {
                segments.pop();
                segments
            } else {
                segments[..segments.len() - 1].to_vec()
            };
            let here: Vec<String> = module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let relative_to = |base: &[String], prefix: &str| {
                paths_after(code, prefix)
                    .into_iter()
                    .map(|p| base.iter().cloned().chain(p).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            };
            let mut paths = paths_after(code, "crate::");
            paths.extend(relative_to(&parent, "super::"));
            paths.extend(relative_to(&here, "self::"));
            // A folder's mod.rs names its children bare: `watcher::spawn(..)`.
            if is_mod_file {
                let prefix = if module.is_empty() {
                    String::new()
                } else {
                    format!("{module}::")
                };
                for child in known
                    .keys()
                    .filter_map(|m| m.strip_prefix(&prefix))
                    .filter(|c| !c.contains("::") && !c.is_empty())
                {
                    let mut base = here.clone();
                    base.push(child.to_owned());
                    paths.extend(relative_to(&base, &format!("{child}::")));
                }
            }
            let mut found = BTreeSet::new();
            for path in paths {
                if let Some(target) = resolve(&path, known).filter(|t| t != module && !t.is_empty()) {
                    found.insert(target);
                }
            }
            (module.clone(), found)
        })
        .collect()
}

/// The modules on a cycle, each cycle once (Tarjan's strongly connected components).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn modules_import_each_other_without_cycles_and_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let graph = imports(&known);
    let mut too_big = Vec::new();
    for (module, file) in &known {
        let lines = code_lines(code(&fs::read_to_string(file).unwrap()));
        let name = if module.is_empty() { "(lib)" } else { module };
        let uses: Vec<&str> = graph[module].iter().map(String::as_str).collect();
        println!("{name:<40} {lines:>4} lines  uses {}", uses.join(", "));
        if lines > MAX_CODE_LINES {
            too_big.push(format!("{name} ({lines} lines)"));
        }
    }
    let mut against_the_flow = Vec::new();
    for (module, uses) in &graph {
        let rank = |m: &str| ORDER.iter().position(|top| Some(*top) == m.split("::").next());
        if module.is_empty() {
            continue; // lib.rs declares the folders
        }
        let Some(from) = rank(module) else {
            panic!("module {module} is in no folder of ORDER; add its folder where it belongs in the flow");
        };
        for used in uses {
            if let Some(to) = rank(used)
                && to > from
            {
                against_the_flow.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(
        against_the_flow.is_empty(),
        "imports against the data flow: {against_the_flow:?}"
    );
    let cycles = cycles(&graph);
    for cycle in &cycles {
        println!("cycle: {}", cycle.join(" <-> "));
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
    assert!(
        too_big.is_empty(),
        "modules over {MAX_CODE_LINES} lines of code: {too_big:?}"
    );
}

#[test]
fn comments_are_not_imports() {
    let code = without_comments("/// See [`crate::a::B`].\nuse crate::c; // not crate::d\nlet s = \"x//y\";");
    let joined: Vec<String> = paths_after(&code, "crate::").iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["c"]);
}

#[test]
fn brace_groups_renames_and_super_paths_are_expanded() {
    let paths = paths_after(
        "use crate::{a, b::{c as C, d::E}, f::G};\nlet x = crate::h::i(); my_crate::z;",
        "crate::",
    );
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a", "b::c", "b::d::E", "f::G", "h::i"]);
    let known: BTreeMap<String, PathBuf> = ["x", "x::y"]
        .iter()
        .map(|m| ((*m).to_owned(), PathBuf::new()))
        .collect();
    let up = |p: &[&str]| resolve(&p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), &known);
    assert_eq!(up(&["x", "z", "super", "y", "F"]), Some("x::y".to_owned()));
    assert_eq!(up(&["x", "y", "super", "super", "q"]), None);
}
