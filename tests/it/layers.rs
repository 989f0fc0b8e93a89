//! The walls between the modules, checked against the source: every `crate::` path in `src/`
//! (`use` lines and paths written in full alike, comments aside) may name only a module on a
//! lower line of the "Layers" list in ARCHITECTURE.md, so the picture there is the import graph.
//! A few walls say more than the layers: they are checked here too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers as ARCHITECTURE.md lists them, top first: each line's module names.
fn layers(architecture: &str) -> Vec<Vec<String>> {
    let section = architecture
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| {
            let (num, rest) = l.trim_start().split_once(". ")?;
            num.parse::<u32>().ok()?;
            // The module names: the backticked words before the dash that explains them.
            let names = rest.split(" — ").next().unwrap_or(rest);
            Some(
                names
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|names: &Vec<String>| !names.is_empty())
        .collect()
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (line comments, doc comments, and block comments).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut rest = line;
        let mut kept = String::new();
        loop {
            if in_block > 0 {
                match rest.find("*/") {
                    Some(i) => {
                        in_block -= 1;
                        rest = &rest[i + 2..];
                    }
                    None => break,
                }
            } else {
                let line_comment = rest.find("//").filter(|&i| {
                    // Not `://` inside a string such as "dns://:53".
                    i == 0 || rest.as_bytes()[i - 1] != b':'
                });
                let block = rest.find("/*");
                match (line_comment, block) {
                    (Some(l), Some(b)) if b < l => {
                        kept.push_str(&rest[..b]);
                        in_block += 1;
                        rest = &rest[b + 2..];
                    }
                    (Some(l), _) => {
                        kept.push_str(&rest[..l]);
                        break;
                    }
                    (None, Some(b)) => {
                        kept.push_str(&rest[..b]);
                        in_block += 1;
                        rest = &rest[b + 2..];
                    }
                    (None, None) => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names with `crate::` (also inside `crate::{a, b::c}`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, up to its closing brace.
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        found.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 {
                    item.push(c);
                }
            }
            found.push(item);
        } else {
            found.push(rest.chars().take(64).collect());
        }
    }
    found
        .iter()
        .filter_map(|p| {
            let name: String = p
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// `src/zone/build.rs` → `zone`, `src/config.rs` → `config`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_imports_one_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let layers = layers(&arch);
    assert!(layers.len() >= 5, "the Layers list: {layers:?}");
    let mut rank = BTreeMap::new();
    for (i, names) in layers.iter().enumerate() {
        for n in names {
            assert!(
                rank.insert(n.clone(), i).is_none(),
                "{n} is listed twice in the Layers list"
            );
        }
    }
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut crossed = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    for path in &files {
        let module = top_module(&src, path);
        let f = path.strip_prefix(root).unwrap_or(path);
        // lib.rs declares the modules; main.rs is the binary (it uses `clusterdns::`).
        if module == "lib" || module == "main" {
            continue;
        }
        modules.insert(module.clone());
        let Some(&own) = rank.get(&module) else {
            crossed.push(format!(
                "{}: module `{module}` is not in ARCHITECTURE.md's Layers list",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for used in crate_paths(&code_of(&text)) {
            if used == module || used == "Error" {
                // `crate::Error` is the re-export of `error::Error` at the root.
                continue;
            }
            match rank.get(&used) {
                Some(&r) if r > own => {}
                Some(_) => crossed.push(format!(
                    "{}: `{module}` imports `{used}`, which is not below it",
                    f.display()
                )),
                None => crossed.push(format!(
                    "{}: `{module}` imports `{used}`, which is not in the Layers list",
                    f.display()
                )),
            }
        }
        // Walls the layers alone do not say.
        let code = code_of(&text);
        if module == "source" && crate_paths(&code).iter().any(|m| m == "wire") {
            crossed.push(format!("{}: source/ knows no DNS wire format", f.display()));
        }
        if module == "server"
            && (code.contains("k8s_openapi")
                || code.contains("kube::")
                || crate_paths(&code)
                    .iter()
                    .any(|m| m == "cluster" || m == "source"))
        {
            crossed.push(format!("{}: server/ knows no Kubernetes type", f.display()));
        }
    }
    for listed in rank.keys() {
        assert!(
            modules.contains(listed),
            "ARCHITECTURE.md's Layers list names `{listed}`, which is not a module of src/"
        );
    }
    assert!(crossed.is_empty(), "walls crossed:\n{}", crossed.join("\n"));
}

/// The scanner itself: it finds what it must, and comments do not count.
#[test]
fn scanner_finds_paths_in_every_form() {
    let code = code_of(
        "use crate::zone::x;\nlet a = crate::ops::metrics::Metrics::default(); // crate::app\n\
         /// [`crate::server`]\nuse crate::{wire::{self, Query}, config::Config};\n\
         /* crate::reload */ let s = \"dns://:53\"; mycrate::nope();\n",
    );
    assert_eq!(crate_paths(&code), ["zone", "ops", "wire", "config"]);
    let arch = "# A\n\n## Layers\n\nText.\n\n1. `app` — wiring\n2. `zone`, `source` — the zone\n\n## Walls\n\n1. `x` — not a layer\n";
    assert_eq!(
        layers(arch),
        vec![
            vec!["app".to_string()],
            vec!["zone".into(), "source".into()]
        ]
    );
}
