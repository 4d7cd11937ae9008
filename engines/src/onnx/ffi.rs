//! The onnx engine's `unsafe`: reading the loaded library's version string, and the
//! CUDA stream handle given to a provider.

use std::ffi::CStr;
use std::path::Path;

/// The version ONNX Runtime at `path` reports (`OrtGetApiBase()->GetVersionString()`).
/// `ort` has loaded the same file already; this only adds a reference to it.
pub fn version_string(path: &Path) -> Result<String, String> {
    // SAFETY: loading ONNX Runtime runs no initialisers beyond its own static ones, which
    // already ran when `ort` loaded the same file.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (its C
    // API's one stable entry point).
    let base_getter = unsafe {
        library.get::<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase")
    }
    .map_err(|_| format!("{} does not export OrtGetApiBase", path.display()))?;
    // SAFETY: the function takes nothing and returns a pointer to a static struct.
    let base = unsafe { base_getter() };
    if base.is_null() {
        return Err(format!("{}: OrtGetApiBase returned null", path.display()));
    }
    // SAFETY: `base` is non-null and points to the library's static OrtApiBase, whose
    // GetVersionString returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) };
    Ok(version.to_string_lossy().into_owned())
}
