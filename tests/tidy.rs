//! The rules ARCHITECTURE.md states, checked against `cargo metadata` and
//! the sources, so a change that breaks one fails the build instead of
//! making a sentence untrue.
//!
//! The source rules read the tree `HOOKLINE_TIDY_ROOT` names, this
//! repository by default, so that a rule can be shown failing on an older
//! checkout.

use std::path::{Path, PathBuf};

use crate::helpers::repo_root;

const ADAPTERS: [&str; 4] = [
    "hookline-aws",
    "hookline-embedded",
    "hookline-stripe",
    "hookline-destinations",
];

fn metadata() -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata is JSON")
}

fn packages(m: &serde_json::Value) -> Vec<&serde_json::Value> {
    m["packages"].as_array().expect("packages").iter().collect()
}

fn name(p: &serde_json::Value) -> &str {
    p["name"].as_str().expect("name")
}

/// (dependency name, kind: "normal", "dev" or "build") of a package.
fn dependencies(p: &serde_json::Value) -> Vec<(&str, &str, &serde_json::Value)> {
    p["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("dependency name"),
                d["kind"].as_str().unwrap_or("normal"),
                d,
            )
        })
        .collect()
}

/// Every `.rs` file of the workspace (not `target/`), with its text.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let file_name = e.file_name();
            let skip = matches!(
                file_name.to_str(),
                Some("target" | ".git" | "node_modules" | ".venv")
            );
            if path.is_dir() && !skip {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    out.push((path, text));
                }
            }
        }
    }
    let mut out = Vec::new();
    for top in ["crates", "src", "tests", "benches", "examples"] {
        walk(&tree().join(top), &mut out);
    }
    assert!(out.len() > 20, "sources found: {}", out.len());
    out
}

/// The tree the source rules read.
fn tree() -> PathBuf {
    std::env::var_os("HOOKLINE_TIDY_ROOT").map_or_else(repo_root, PathBuf::from)
}

fn relative(path: &Path) -> String {
    path.strip_prefix(tree())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The binaries see ports, never an adapter: only `hookline-backend`
/// names one. (The test suite, whose soak binary drives both backends,
/// is the exception.)
#[test]
fn no_binary_crate_depends_on_an_adapter() {
    let m = metadata();
    let mut broken = Vec::new();
    for p in packages(&m) {
        let is_bin = p["targets"].as_array().expect("targets").iter().any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        });
        if !is_bin || name(p) == "hookline-testkit" {
            continue;
        }
        for (dep, kind, _) in dependencies(p) {
            if kind == "normal" && ADAPTERS.contains(&dep) {
                broken.push(format!("{} depends on {dep}", name(p)));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}

/// SQLite is the embedded crate's business and the AWS SDK the aws
/// crate's: nothing else declares or names them (tests and the soak reach
/// the database through `hookline_embedded::testing`).
#[test]
fn only_the_adapters_import_their_libraries() {
    let m = metadata();
    let owner = |dep: &str| -> Option<&str> {
        if dep == "rusqlite" {
            Some("hookline-embedded")
        } else if dep.starts_with("aws-sdk-")
            || dep.starts_with("aws-smithy-")
            || dep == "aws-config"
        {
            Some("hookline-aws")
        } else {
            None
        }
    };
    let mut broken = Vec::new();
    for p in packages(&m) {
        for (dep, _, _) in dependencies(p) {
            if owner(dep).is_some_and(|o| o != name(p)) {
                broken.push(format!("{} declares {dep}", name(p)));
            }
        }
    }
    for (path, text) in sources() {
        let rel = relative(&path);
        if rel == "tests/tidy.rs" {
            continue;
        }
        if !rel.starts_with("crates/embedded/") && text.contains("rusqlite") {
            broken.push(format!("{rel} names rusqlite"));
        }
        // Stripe's API is read through the one client (its rate limit,
        // retries, pinned version); nothing else names Stripe's base URL.
        if !rel.starts_with("crates/stripe/")
            && !rel.starts_with("crates/settings/")
            && text.contains("https://api.stripe.com")
        {
            broken.push(format!("{rel} calls Stripe's API itself"));
        }
        if !rel.starts_with("crates/aws/")
            && ["aws_sdk_", "aws_config", "aws_smithy_"]
                .iter()
                .any(|s| text.contains(s))
        {
            broken.push(format!("{rel} names the AWS SDK"));
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}

/// The domain crate stays a library of rules: no command line, no log
/// output, no HTTP or database, and no runtime of its own.
#[test]
fn the_core_crate_needs_no_runtime_or_edge_library() {
    let m = metadata();
    let core = packages(&m)
        .into_iter()
        .find(|p| name(p) == "hookline-core")
        .expect("hookline-core");
    let mut broken = Vec::new();
    for (dep, kind, d) in dependencies(core) {
        if kind != "normal" {
            continue;
        }
        if [
            "clap",
            "tracing-subscriber",
            "axum",
            "hyper",
            "reqwest",
            "rusqlite",
        ]
        .contains(&dep)
            || dep.starts_with("aws-")
        {
            broken.push(format!("hookline-core depends on {dep}"));
        }
        if dep == "tokio" {
            let features: Vec<&str> = d["features"]
                .as_array()
                .expect("features")
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            for f in ["rt-multi-thread", "net", "process", "full"] {
                if features.contains(&f) {
                    broken.push(format!("hookline-core's tokio has `{f}`"));
                }
            }
            if d["uses_default_features"] == true {
                broken.push("hookline-core's tokio has its default features".to_owned());
            }
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}

/// Errors are classified once, by kind, where they happen: production code
/// never decides by reading an error's text.
#[test]
fn production_code_does_not_branch_on_error_text() {
    const PATTERNS: [&str; 5] = [
        "to_string().contains(",
        "to_string().starts_with(",
        "to_string().ends_with(",
        "message().contains(",
        "message().starts_with(",
    ];
    let mut broken = Vec::new();
    for (path, text) in sources() {
        let rel = relative(&path);
        let production =
            (rel.starts_with("crates/") && rel.contains("/src/")) || rel.starts_with("src/");
        if !production {
            continue;
        }
        // Unit tests at the end of a file may read error text.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if PATTERNS.iter().any(|p| line.contains(p)) {
                broken.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// A file's production code: the text before its `#[cfg(test)]` module,
/// with `//` comments (doc comments included) blanked, line numbers kept.
fn production_code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        out.push(if trimmed.starts_with("//") {
            String::new()
        } else {
            line.to_owned()
        });
    }
    out
}

/// The worker's modules (file stem) and the modules each imports through
/// `crate::…` in its production code.
fn worker_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let dir = tree().join("crates/worker/src");
    let files: Vec<(PathBuf, String)> = sources()
        .into_iter()
        .filter(|(p, _)| p.parent() == Some(dir.as_path()))
        .collect();
    let modules: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| p.file_stem()?.to_str().map(str::to_owned))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph = std::collections::BTreeMap::new();
    for (path, text) in &files {
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !modules.contains(module) {
            continue;
        }
        let code = production_code(text).join("\n");
        let mut imports = std::collections::BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let named: Vec<&str> = match rest.strip_prefix('{') {
                // `crate::{a, b::c}`: the first name of each path.
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")],
            };
            for n in named {
                if n != module && modules.contains(n) {
                    imports.insert(n.to_owned());
                }
            }
        }
        graph.insert(module.to_owned(), imports);
    }
    graph
}

/// An event's walk through the worker goes down and never back: the
/// modules' imports form no circle (the layering ARCHITECTURE.md draws).
#[test]
fn the_workers_modules_import_no_circle() {
    let graph = worker_imports();
    assert!(graph.len() > 10, "worker modules found: {graph:?}");
    // Depth-first; a module met again while on the path closes a circle.
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_owned());
            circles.push(circle.join(" → "));
            return;
        }
        if !done.insert(m.to_owned()) {
            return;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let (mut done, mut circles) = (std::collections::BTreeSet::new(), Vec::new());
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "the worker's modules import each other in a circle:\n  {}",
        circles.join("\n  ")
    );
}

/// The body of each `fn` in `code` (production lines): (name, first line,
/// lines from its signature to its closing brace).
fn functions(code: &[String]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (start, line) in code.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let before_ok = words[..at].iter().all(|w| {
            matches!(*w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        let Some(word) = words.get(at + 1).filter(|_| before_ok) else {
            continue;
        };
        let name: String = word
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if let Some(len) = body_length(&code[start..]) {
            out.push((name, start + 1, len));
        }
    }
    out
}

/// Lines from the first line of `lines` to the brace that closes the
/// first body opened, skipping string and char literals; `None` for a
/// declaration without a body.
fn body_length(lines: &[String]) -> Option<usize> {
    let mut depth = 0usize;
    let mut opened = false;
    for (n, line) in lines.iter().enumerate() {
        let mut chars = line.chars().peekable();
        let mut in_str = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_str => {
                    chars.next();
                }
                '"' => in_str = !in_str,
                '\'' if !in_str => {
                    // A char literal ('{', '\''); a lifetime has no closing quote.
                    let mut ahead = chars.clone();
                    let first = ahead.next();
                    let literal = match first {
                        Some('\\') => true,
                        Some(_) => ahead.next() == Some('\''),
                        None => false,
                    };
                    if literal {
                        while let Some(x) = chars.next() {
                            if x == '\\' {
                                chars.next();
                            } else if x == '\'' {
                                break;
                            }
                        }
                    }
                }
                '/' if !in_str && chars.peek() == Some(&'/') => break,
                ';' if !in_str && !opened && depth == 0 => return None,
                '{' if !in_str => {
                    depth += 1;
                    opened = true;
                }
                '}' if !in_str => {
                    depth = depth.saturating_sub(1);
                    if opened && depth == 0 {
                        return Some(n + 1);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// Every function in the worker reads on one screen: 60 lines at most,
/// from its signature to its closing brace (tests aside).
#[test]
fn no_function_in_the_worker_is_over_60_lines() {
    let dir = tree().join("crates/worker/src");
    let mut long = Vec::new();
    let mut seen = 0;
    for (path, text) in sources() {
        if !path.starts_with(&dir) {
            continue;
        }
        for (name, line, len) in functions(&production_code(&text)) {
            seen += 1;
            if len > 60 {
                long.push(format!("{}:{line} fn {name}: {len} lines", relative(&path)));
            }
        }
    }
    assert!(seen > 100, "worker functions found: {seen}");
    assert!(
        long.is_empty(),
        "functions over 60 lines in crates/worker:\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_function_reader_measures_bodies_not_strings() {
    let code: Vec<String> = [
        "pub(crate) async fn a(x: &str) -> usize {",
        "    let s = \"}}{\";",
        "    let c = '}';",
        "    if x.is_empty() { 1 } else { 2 }",
        "}",
        "fn declared(&self) -> u8;",
        "fn b<'a>(x: &'a str) -> &'a str { x }",
    ]
    .iter()
    .map(|l| (*l).to_owned())
    .collect();
    assert_eq!(
        functions(&code),
        vec![("a".to_owned(), 1, 5), ("b".to_owned(), 7, 1)]
    );
}

/// Each module says what it is for in a `//!` header: ARCHITECTURE.md
/// points to them for the details.
#[test]
fn every_module_starts_with_a_header() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(path, _)| !relative(path).contains("/node_modules/"))
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| relative(&path))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` header:\n  {}",
        missing.join("\n  ")
    );
}

fn contract() -> String {
    std::fs::read_to_string(tree().join("docs/contract.md")).unwrap_or_default()
}

/// Every setting a binary accepts (a clap argument's `env = "…"`) is in the
/// contract.
#[test]
fn every_setting_is_in_the_contract() {
    let contract = contract();
    let mut settings = std::collections::BTreeSet::new();
    for (path, text) in sources() {
        if !relative(&path).starts_with("crates/") {
            continue;
        }
        for (i, _) in text.match_indices("env = \"") {
            let rest = &text[i + "env = \"".len()..];
            if let Some(end) = rest.find('"') {
                settings.insert(rest[..end].to_owned());
            }
        }
    }
    assert!(settings.len() > 40, "settings found: {settings:?}");
    let missing: Vec<&String> = settings
        .iter()
        .filter(|s| !contract.contains(&format!("`{s}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "settings the binaries accept but docs/contract.md does not list: {missing:?}"
    );
}

/// Every metric the code registers, its Prometheus name and its EMF name,
/// is in the contract.
#[test]
fn every_metric_is_in_the_contract() {
    let contract = contract();
    let mut metrics = std::collections::BTreeSet::new();
    for (path, text) in sources() {
        let file = relative(&path);
        let registers = file.starts_with("crates/")
            && (file.ends_with("/metrics.rs") || text.contains("pub const METRIC: &str"));
        if !registers {
            continue;
        }
        let code = production_code(&text).join("\n");
        // Prometheus names: `hookline_…` literals.
        for (i, _) in code.match_indices("\"hookline_") {
            let rest = &code[i + 1..];
            if let Some(end) = rest.find('"') {
                metrics.insert(rest[..end].to_owned());
            }
        }
        // EMF names: the literal before each `Reading::`.
        for (i, _) in code.match_indices("Reading::") {
            let before = code[..i].trim_end().trim_end_matches(',').trim_end();
            if let Some(name) = before.strip_suffix('"') {
                let name = &name[name.rfind('"').map_or(0, |q| q + 1)..];
                if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    metrics.insert(name.to_owned());
                }
            }
        }
    }
    assert!(metrics.len() > 40, "metrics found: {metrics:?}");
    let missing: Vec<&String> = metrics
        .iter()
        .filter(|m| !contract.contains(&format!("`{m}")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the code registers but docs/contract.md does not list: {missing:?}"
    );
}

/// The tests build on the release build: a dev-dependency that asks a
/// feature the normal build lacks makes cargo build that crate, and every
/// crate above it, a second time for the tests (tokio's `test-util` once
/// cost about 60 crates). `cargo tree` resolves the features with and
/// without the dev-dependencies; they must agree on every crate both use.
#[test]
fn the_tests_ask_no_feature_the_release_build_lacks() {
    let tree = |dev: bool| -> std::collections::BTreeMap<String, String> {
        let mut args = vec!["tree", "--workspace", "--prefix", "none", "-f", "{p}|{f}"];
        if !dev {
            args.extend(["-e", "no-dev"]);
        }
        let out = std::process::Command::new(env!("CARGO"))
            .args(&args)
            .current_dir(repo_root())
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim_end_matches(" (*)").split_once('|'))
            .map(|(p, f)| (p.to_owned(), f.to_owned()))
            .collect()
    };
    let (release, tests) = (tree(false), tree(true));
    assert!(release.len() > 100, "crates resolved: {}", release.len());
    let differ: Vec<String> = release
        .iter()
        .filter_map(|(p, f)| {
            let t = tests.get(p)?;
            (t != f).then(|| format!("{p}: [{f}] for the release build, [{t}] for the tests"))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "the tests would build these crates again:\n  {}",
        differ.join("\n  ")
    );
}
