//! The rules ARCHITECTURE.md states, checked against `cargo metadata` and
//! the sources, so a change that breaks one fails the build instead of
//! making a sentence untrue.

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
        walk(&repo_root().join(top), &mut out);
    }
    assert!(out.len() > 20, "sources found: {}", out.len());
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
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
        if !is_bin || name(p) == "hookline-suite" {
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
