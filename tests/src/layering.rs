//! Layering: in a crate whose modules form a pipeline, each uses only modules below it
//! in a stated order. A scan of every `crate::` path, so an import running back up is
//! named by file and line.

use std::path::Path;

/// Every `crate::<module>` named in `path` (a file, or the Rust files under a folder),
/// with file and line.
fn references(path: &Path, out: &mut Vec<(String, usize, String)>) {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).unwrap_or_else(|e| panic!("listing {}: {e}", path.display()));
        for entry in entries.flatten() {
            references(&entry.path(), out);
        }
        return;
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = path.display().to_string();
    for (n, line) in text.lines().enumerate() {
        // Doc links name modules without depending on them.
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{embed, map};`
                for part in group.split('}').next().unwrap_or("").split(',') {
                    let part = part.trim().split("::").next().unwrap_or("");
                    if !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        out.push((file.clone(), n + 1, part.to_string()));
                    }
                }
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // Lower-case: a module (`crate::Result` is a re-export at the root).
            if name.chars().next().is_some_and(|c| c.is_lowercase()) {
                out.push((file.clone(), n + 1, name));
            }
        }
    }
}

/// Where `src` (a crate's `src/`) imports a module above the importer in `layers`
/// (lowest first), as `file:line: a uses b` lines; `checked` imports were looked at.
pub fn upward_imports(src: &Path, layers: &[&str]) -> (usize, Vec<String>) {
    let rank = |m: &str| layers.iter().position(|l| *l == m);
    let (mut checked, mut wrong) = (0, Vec::new());
    for module in layers {
        let mut refs = Vec::new();
        for path in [src.join(module), src.join(format!("{module}.rs"))] {
            if path.exists() {
                references(&path, &mut refs);
            }
        }
        for (file, line, used) in refs {
            checked += 1;
            match (rank(&used), rank(module)) {
                (Some(u), Some(m)) if u > m => {
                    wrong.push(format!("{file}:{line}: {module} uses {used}, which is built on it"))
                }
                (None, _) => wrong.push(format!("{file}:{line}: {used} is not in the stated layers")),
                _ => {}
            }
        }
    }
    (checked, wrong)
}
