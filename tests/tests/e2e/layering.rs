//! Each library's modules form a pipeline; none imports one built on it.

use kensa_e2e::layering::upward_imports;
use kensa_e2e::repo_root;

fn check(src: &str, layers: &[&str], at_least: usize) {
    let (checked, wrong) = upward_imports(&repo_root().join(src), layers);
    assert!(checked >= at_least, "only {checked} imports found in {src}: is the scan broken?");
    assert!(wrong.is_empty(), "imports running back up in {src}:\n{}", wrong.join("\n"));
}

#[test]
fn the_ml_core_imports_only_down_its_pipeline() {
    // host/core/src/lib.rs documents this order.
    let layers = [
        "error", "progress", "metrics", "evidence", "onnx", "dataset", "backbone", "embed", "map", "heads",
        "model", "score", "train", "eval", "export",
    ];
    check("host/core/src", &layers, 40);
}

#[test]
fn the_firmware_imports_only_down_its_layers() {
    // Time and pure rules, then devices, then the line, then the link on top.
    let layers = [
        "clock",
        "logbook",
        "schedule",
        "config",
        "actuator",
        "permit",
        "camera",
        "store",
        "station",
        "model",
        "supervisor",
        "line",
        "settings",
        "link",
    ];
    check("firmware/src", &layers, 30);
}

#[test]
fn an_import_running_back_up_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("low.rs"), "use crate::high::Thing;\n").unwrap();
    std::fs::write(dir.path().join("high.rs"), "use crate::{low, low::Other};\n// crate::low in a comment\n")
        .unwrap();
    let (checked, wrong) = upward_imports(dir.path(), &["low", "high"]);
    assert_eq!(checked, 3);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].ends_with("low.rs:1: low uses high, which is built on it"), "{}", wrong[0]);
}
