//! Finding and loading the ONNX Runtime library, once per process.
//!
//! The `ort` crate's `load-dynamic` mode binds ONNX Runtime's C API at run time from a
//! `libonnxruntime.so`, so mica builds without it and runs against whatever build the
//! host has (JetPack's with TensorRT and CUDA, PyPI's CPU build). The library is looked
//! for, in order:
//! 1. the unit's `engine.library`;
//! 2. `ORT_DYLIB_PATH`;
//! 3. `.cache/onnxruntime/<version>/libonnxruntime.so.<version>` written by
//!    `scripts/fetch-onnxruntime.sh`, under the working directory or a folder above the
//!    executable (a checkout's `target/release/mica` finds the checkout's cache);
//! 4. the system: the dynamic loader's own search (`LD_LIBRARY_PATH`, `ld.so.cache`),
//!    then the folders JetPack and ONNX Runtime's installers use.
//!
//! A process loads one library: the first onnx unit decides it, and a later unit naming
//! another is refused. ONNX Runtime older than the C API level mica is built for
//! ([`MIN_MINOR_VERSION`]) is refused by `ort`'s own check, with both versions named.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::engine::EngineError;

/// The oldest ONNX Runtime minor version mica loads: 1.24, JetPack's default (the
/// `api-24` level `ort` is built with).
pub const MIN_MINOR_VERSION: u32 = 24;

/// The file name of the library on this platform.
const LIBRARY_NAME: &str = "libonnxruntime.so";

/// Folders ONNX Runtime installs itself into on Linux and JetPack.
const SYSTEM_FOLDERS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/opt/onnxruntime/lib",
];

/// The loaded library and the process's ONNX Runtime environment.
#[derive(Debug)]
pub struct Runtime {
    /// The library file loaded.
    pub path: PathBuf,
    /// Its version, as ONNX Runtime reports it (`1.31.1`).
    pub version: String,
    /// The process-wide environment every session is created in.
    pub environment: Environment,
}

/// What the first load decided: the runtime, or why it could not load (kept, so every
/// unit reports the same cause without retrying). `get_or_init` runs one load even when
/// several stream workers ask at once.
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process's ONNX Runtime, loading it on first use from `configured` (a unit's
/// `engine.library`) or the search order above.
pub fn runtime(configured: Option<&Path>) -> Result<&'static Runtime, EngineError> {
    let runtime = RUNTIME
        .get_or_init(|| load(configured))
        .as_ref()
        .map_err(|cause| EngineError::Load(cause.clone()))?;
    if let Some(wanted) = configured {
        if !same_file(wanted, &runtime.path) {
            return Err(EngineError::Load(format!(
                "ONNX Runtime is already loaded from {} in this process, and one process \
                 loads one library: give every onnx unit the same engine.library (this one \
                 names {})",
                runtime.path.display(),
                wanted.display()
            )));
        }
    }
    Ok(runtime)
}

/// The loaded runtime, if an onnx unit has loaded one (for reports).
pub fn loaded() -> Option<&'static Runtime> {
    RUNTIME.get().and_then(|r| r.as_ref().ok())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One place the library was looked for, and what was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The path given to the dynamic loader (a bare name asks its own search).
    pub path: PathBuf,
    /// Where the candidate came from (`engine.library`, `ORT_DYLIB_PATH`, ...).
    pub source: &'static str,
}

/// The candidates, in search order, for a unit with `configured` as its library.
pub fn candidates(
    configured: Option<&Path>,
    env_path: Option<&str>,
    roots: &[PathBuf],
) -> Vec<Candidate> {
    if let Some(path) = configured {
        // A configured library is the only one tried: a typo must not load another.
        return vec![Candidate {
            path: path.to_path_buf(),
            source: "engine.library",
        }];
    }
    if let Some(path) = env_path.filter(|p| !p.is_empty()) {
        return vec![Candidate {
            path: PathBuf::from(path),
            source: "ORT_DYLIB_PATH",
        }];
    }
    let mut found = Vec::new();
    for root in roots {
        found.extend(cached_libraries(&root.join(".cache").join("onnxruntime")));
    }
    found.push(Candidate {
        path: PathBuf::from(LIBRARY_NAME),
        source: "the dynamic loader's search path",
    });
    for folder in SYSTEM_FOLDERS {
        found.push(Candidate {
            path: Path::new(folder).join(LIBRARY_NAME),
            source: "system folder",
        });
    }
    found
}

/// `<cache>/<version>/libonnxruntime.so.<version>` files, newest version first.
fn cached_libraries(cache: &Path) -> Vec<Candidate> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.to_string();
            let numbers = version
                .split('.')
                .map(|n| n.parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()?;
            let file = entry.path().join(format!("{LIBRARY_NAME}.{version}"));
            file.is_file().then_some((numbers, file))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions
        .into_iter()
        .map(|(_, path)| Candidate {
            path,
            source: "scripts/fetch-onnxruntime.sh's cache",
        })
        .collect()
}

/// Folders whose `.cache/onnxruntime` is searched: the working directory and the
/// executable's ancestors.
fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    roots.dedup();
    roots
}

fn load(configured: Option<&Path>) -> Result<Runtime, String> {
    let env_path = std::env::var("ORT_DYLIB_PATH").ok();
    let tried = candidates(configured, env_path.as_deref(), &search_roots());
    let mut failures = Vec::new();
    for candidate in &tried {
        // A path with a folder that does not exist is not worth a dlopen message.
        if candidate.path.components().count() > 1 && !candidate.path.exists() {
            failures.push(format!(
                "{} ({}): no such file",
                candidate.path.display(),
                candidate.source
            ));
            continue;
        }
        match ort::init_from(&candidate.path) {
            Ok(builder) => {
                // `init_from` has refused anything older than the API level mica is
                // built for (`MIN_MINOR_VERSION`); this is for the log and reports.
                let version = super::ffi::version_string(&candidate.path)?;
                let environment = builder
                    .with_name("mica")
                    .build()
                    .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
                tracing::info!(
                    library = %candidate.path.display(),
                    source = candidate.source,
                    version = %version,
                    "onnx runtime loaded"
                );
                return Ok(Runtime {
                    path: candidate.path.clone(),
                    version,
                    environment,
                });
            }
            Err(error) => {
                let message = error.to_string();
                // ort's own version check: keep its words, they name both versions.
                if message.contains("not compatible") {
                    return Err(format!(
                        "{message} (mica needs ONNX Runtime 1.{MIN_MINOR_VERSION} or newer)"
                    ));
                }
                failures.push(format!(
                    "{} ({}): {message}",
                    candidate.path.display(),
                    candidate.source
                ));
                if candidate.source == "engine.library" || candidate.source == "ORT_DYLIB_PATH" {
                    break;
                }
            }
        }
    }
    Err(format!(
        "ONNX Runtime library not found; tried {}. Run scripts/fetch-onnxruntime.sh (CPU \
         provider) or install ONNX Runtime with the providers you need, and set \
         engine.library or ORT_DYLIB_PATH",
        failures.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_library_is_the_only_candidate() {
        let found = candidates(
            Some(Path::new("/opt/ort/libonnxruntime.so.1.24.0")),
            Some("/elsewhere/libonnxruntime.so"),
            &[],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].source, "engine.library");
    }

    #[test]
    fn the_environment_comes_before_the_cache_and_the_system() {
        let found = candidates(None, Some("/x/libonnxruntime.so"), &[]);
        assert_eq!(found[0].source, "ORT_DYLIB_PATH");
        let found = candidates(None, Some(""), &[]);
        assert_eq!(found[0].source, "the dynamic loader's search path");
        assert!(found.iter().any(|c| c.source == "system folder"));
    }

    #[test]
    fn the_fetch_scripts_cache_is_searched_newest_first() {
        let root = std::env::temp_dir().join(format!("mica-ort-cache-{}", std::process::id()));
        for version in ["1.24.0", "1.31.1", "1.9.0"] {
            let folder = root.join(".cache/onnxruntime").join(version);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join(format!("libonnxruntime.so.{version}")), b"").unwrap();
        }
        // A folder that is not a version is ignored.
        std::fs::create_dir_all(root.join(".cache/onnxruntime/wheel")).unwrap();
        let found = candidates(None, None, std::slice::from_ref(&root));
        let cached: Vec<String> = found
            .iter()
            .filter(|c| c.source.contains("fetch-onnxruntime"))
            .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            cached,
            [
                "libonnxruntime.so.1.31.1",
                "libonnxruntime.so.1.24.0",
                "libonnxruntime.so.1.9.0"
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
