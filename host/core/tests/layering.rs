//! The core's modules form a pipeline: each uses only modules above it in `LAYERS`
//! (the order lib.rs documents). An import running back up fails here, by file and line.

use std::path::Path;

/// Lowest first. `error` and `progress` serve every layer.
const LAYERS: [&str; 14] = [
    "error", "progress", "metrics", "onnx", "dataset", "backbone", "embed", "map", "heads", "model", "score",
    "train", "eval", "export",
];

fn rank(module: &str) -> usize {
    LAYERS.iter().position(|m| *m == module).unwrap_or_else(|| panic!("module {module} is not in LAYERS"))
}

/// Every `crate::<module>` named in `path` (a file, or the Rust files under a folder),
/// with file and line.
fn references(path: &Path, out: &mut Vec<(String, usize, String)>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            references(&entry.unwrap().path(), out);
        }
        return;
    }
    {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Doc links name modules without depending on them.
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{embed, map};`
                    let group = group.split('}').next().unwrap_or("");
                    for part in group.split(',') {
                        let part = part.trim().split("::").next().unwrap_or("").to_string();
                        if !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                            out.push((path.display().to_string(), n + 1, part));
                        }
                    }
                } else if !name.is_empty() && name.chars().next().unwrap().is_lowercase() {
                    out.push((path.display().to_string(), n + 1, name));
                }
            }
        }
    }
}

#[test]
fn no_module_imports_one_below_it_in_the_pipeline() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for module in LAYERS {
        let dir = src.join(module);
        let mut refs = Vec::new();
        if dir.is_dir() {
            references(&dir, &mut refs);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            references(&file, &mut refs);
        }
        for (file, line, used) in refs {
            checked += 1;
            if used != module && rank(&used) > rank(module) {
                wrong.push(format!("{file}:{line}: {module} uses {used}, which is built on it"));
            }
        }
    }
    assert!(checked > 40, "only {checked} imports found: is the scan broken?");
    assert!(wrong.is_empty(), "imports running back up the pipeline:\n{}", wrong.join("\n"));
}
