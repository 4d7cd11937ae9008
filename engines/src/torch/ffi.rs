//! Every `unsafe` of the torch engine lives here, each block with its `// SAFETY:`.
//!
//! Three things tch 0.24 does not give us:
//! - **libtorch_cuda.so** itself: Rust links with `--as-needed`, so the library is dropped
//!   from the binary and libtorch sees no CUDA. [`TorchCuda::open`] loads it at start-up
//!   (its static initializers register libtorch's CUDA hooks) and keeps it for the life of
//!   the process.
//! - **CUDA streams**: libtorch 2.11 exports C functions in libtorch_cuda.so (declared in
//!   `torch/csrc/stable/c/shim.h`) to take a stream from libtorch's pool, make it the
//!   calling thread's current stream and wait for it. [`CudaStream`] wraps them; they are
//!   resolved from the library handle, so nothing links against libtorch_cuda.so.
//! - **TF32 control** and **writing into a host tensor**: the first through our own C++
//!   shim (`shim.cpp`, built by `build.rs`), the second with a checked `memcpy` into the
//!   staging tensor's storage.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use libloading::Library;
use tch::{Device, Kind, Tensor};

extern "C" {
    fn mica_torch_set_cuda_tf32(allow: c_int, error: *mut c_char, error_len: usize) -> c_int;
    fn mica_torch_cuda_tf32(conv: *mut c_int, matmul: *mut c_int) -> c_int;
}

/// `AOTITorchError torch_get_cuda_stream_from_pool(bool, int32_t, void**)`.
type GetStreamFromPool = unsafe extern "C" fn(bool, i32, *mut *mut c_void) -> i32;
/// `AOTITorchError torch_set_current_cuda_stream(void*, int32_t)`.
type SetCurrentStream = unsafe extern "C" fn(*mut c_void, i32) -> i32;
/// `AOTITorchError torch_cuda_stream_synchronize(void*, int32_t)`.
type StreamSynchronize = unsafe extern "C" fn(*mut c_void, i32) -> i32;

/// Allows or forbids TF32 for FP32 work on CUDA devices (cuDNN convolutions, cuBLAS
/// matrix products, RNNs). Process-wide: libtorch has no narrower switch.
pub(crate) fn set_cuda_tf32(allow: bool) -> Result<(), String> {
    let mut message = [0 as c_char; 512];
    // SAFETY: `message` is a writable buffer of the length passed; the shim writes at most
    // `len - 1` bytes plus a NUL and catches every C++ exception.
    let status = unsafe {
        mica_torch_set_cuda_tf32(c_int::from(allow), message.as_mut_ptr(), message.len())
    };
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim NUL-terminates the buffer on every error path, and the buffer was
    // zeroed before the call, so it always holds a NUL within its length.
    let text = unsafe { CStr::from_ptr(message.as_ptr()) };
    Err(text.to_string_lossy().into_owned())
}

/// Whether TF32 is allowed for CUDA convolutions and for CUDA matrix products.
pub(crate) fn cuda_tf32() -> Result<(bool, bool), String> {
    let mut conv: c_int = 0;
    let mut matmul: c_int = 0;
    // SAFETY: both pointers are to live, writable `c_int`s; the shim catches exceptions.
    let status = unsafe { mica_torch_cuda_tf32(&mut conv, &mut matmul) };
    if status == 0 {
        Ok((conv != 0, matmul != 0))
    } else {
        Err("libtorch could not report its TF32 settings".to_owned())
    }
}

/// libtorch_cuda.so, loaded once and kept for the life of the process.
pub(crate) struct TorchCuda {
    path: PathBuf,
    get_stream_from_pool: GetStreamFromPool,
    set_current_stream: SetCurrentStream,
    stream_synchronize: StreamSynchronize,
    /// Never dropped (the value lives in a `static`): the function pointers above point
    /// into it.
    _library: Library,
}

impl std::fmt::Debug for TorchCuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchCuda")
            .field("path", &self.path)
            .finish()
    }
}

impl TorchCuda {
    /// Loads the library at `path` (a file path, or a bare name for the dynamic loader's
    /// search) and resolves the stream functions.
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        // SAFETY: loading runs libtorch_cuda's static initializers, which register the
        // CUDA hooks with the libtorch_cpu already loaded in this process. Callers pass the
        // libtorch_cuda.so that sits beside that libtorch_cpu.so (or the one the loader
        // finds first), which is the supported way to use libtorch's CUDA backend.
        let library = unsafe { Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY: the symbol types match the declarations in libtorch 2.11's
        // torch/csrc/stable/c/shim.h (bool, int32_t, void**, returning int32_t); the copied
        // function pointers stay valid because `library` is stored beside them and never
        // unloaded (the `TorchCuda` lives in a process-wide static).
        let functions = unsafe {
            let get = *library
                .get::<GetStreamFromPool>(b"torch_get_cuda_stream_from_pool\0")
                .map_err(|e| e.to_string())?;
            let set = *library
                .get::<SetCurrentStream>(b"torch_set_current_cuda_stream\0")
                .map_err(|e| e.to_string())?;
            let sync = *library
                .get::<StreamSynchronize>(b"torch_cuda_stream_synchronize\0")
                .map_err(|e| e.to_string())?;
            (get, set, sync)
        };
        Ok(Self {
            path: path.to_path_buf(),
            get_stream_from_pool: functions.0,
            set_current_stream: functions.1,
            stream_synchronize: functions.2,
            _library: library,
        })
    }

    /// Where the library was loaded from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// One CUDA stream from libtorch's pool, on one device.
#[derive(Debug)]
pub(crate) struct CudaStream {
    raw: NonNull<c_void>,
    device: i32,
    cuda: &'static TorchCuda,
}

// SAFETY: a CUDA stream handle (`cudaStream_t`) may be used from any host thread; libtorch's
// pool streams are never destroyed, and every call through this type passes the handle to
// libtorch, which makes it current for the *calling* thread only.
unsafe impl Send for CudaStream {}

impl CudaStream {
    /// Takes the next stream of libtorch's pool for `device` (the pool hands out its
    /// streams round-robin, 32 per priority and device).
    pub(crate) fn from_pool(
        cuda: &'static TorchCuda,
        device: i32,
        high_priority: bool,
    ) -> Result<Self, String> {
        let mut raw: *mut c_void = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; the function was resolved from
        // libtorch_cuda.so with this exact signature and returns 0 on success.
        let status = unsafe { (cuda.get_stream_from_pool)(high_priority, device, &mut raw) };
        if status != 0 {
            return Err(format!(
                "torch_get_cuda_stream_from_pool failed (status {status}) on cuda:{device}"
            ));
        }
        let raw = NonNull::new(raw).ok_or_else(|| {
            format!("torch_get_cuda_stream_from_pool returned a null stream on cuda:{device}")
        })?;
        Ok(Self { raw, device, cuda })
    }

    /// Makes this stream the calling thread's current stream on its device: every
    /// libtorch kernel and copy the thread issues for that device goes to it.
    pub(crate) fn make_current(&self) -> Result<(), String> {
        // SAFETY: `raw` came from libtorch's pool for `device` and stays valid for the
        // process; the function only writes libtorch's thread-local current stream.
        let status = unsafe { (self.cuda.set_current_stream)(self.raw.as_ptr(), self.device) };
        if status == 0 {
            Ok(())
        } else {
            Err(format!(
                "torch_set_current_cuda_stream failed (status {status}) on cuda:{}",
                self.device
            ))
        }
    }

    /// Blocks until all work queued on this stream has finished.
    pub(crate) fn synchronize(&self) -> Result<(), String> {
        // SAFETY: as for `make_current`; the call only waits on the stream.
        let status = unsafe { (self.cuda.stream_synchronize)(self.raw.as_ptr(), self.device) };
        if status == 0 {
            Ok(())
        } else {
            Err(format!(
                "torch_cuda_stream_synchronize failed (status {status}) on cuda:{} \
                 (a kernel of this stream failed, or the device was lost)",
                self.device
            ))
        }
    }

    /// The stream's device index.
    pub(crate) fn device(&self) -> i32 {
        self.device
    }
}

/// Copies `data` into the first `data.len()` elements of `dst`, a contiguous FP32 host
/// tensor (the engine's staging buffer, pinned for CUDA units). One `memcpy`, no
/// intermediate tensor.
pub(crate) fn fill_host_f32(dst: &Tensor, data: &[f32]) -> Result<(), String> {
    let kind = dst.f_kind().map_err(|e| e.to_string())?;
    if kind != Kind::Float {
        return Err(format!("staging buffer is {kind:?}, expected Float"));
    }
    if dst.device() != Device::Cpu {
        return Err(format!(
            "staging buffer is on {:?}, expected the host",
            dst.device()
        ));
    }
    if !dst.is_contiguous() {
        return Err("staging buffer is not contiguous".to_owned());
    }
    let capacity = dst.numel();
    if data.len() > capacity {
        return Err(format!(
            "{} values do not fit in a staging buffer of {capacity}",
            data.len()
        ));
    }
    let target = dst.data_ptr().cast::<f32>();
    if data.is_empty() {
        return Ok(());
    }
    if target.is_null() {
        return Err("staging buffer has no storage".to_owned());
    }
    // SAFETY: `dst` is a live, contiguous FP32 host tensor with at least `data.len()`
    // elements starting at `data_ptr()` (checked above; data_ptr already includes the
    // storage offset), so the destination range is valid for writes; it cannot overlap
    // `data`, a Rust slice that libtorch never saw. The caller guarantees no pending
    // asynchronous copy still reads the buffer (the engine synchronizes its stream at the
    // end of every batch).
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len());
    }
    Ok(())
}

// ------------------------------------------------------------------ CUDA graphs

/// The CUDA graph library built by `build.rs` from `cuda_graph_shim.cpp`, embedded.
static CUDA_GRAPH_LIBRARY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/libmica_torch_cuda_graph.so"));

/// The ABI version `cuda_graph_shim.cpp` reports.
const CUDA_GRAPH_ABI: c_int = 1;

/// An opaque `mica_cuda_graph*` of the graph library.
#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}

type GraphAbiVersion = unsafe extern "C" fn() -> c_int;
type GraphBegin =
    unsafe extern "C" fn(c_int, *mut RawGraph, *mut *mut RawGraph, *mut c_char, usize) -> c_int;
type GraphCall = unsafe extern "C" fn(*mut RawGraph, *mut c_char, usize) -> c_int;
type GraphPoolBytes =
    unsafe extern "C" fn(*mut RawGraph, *mut u64, *mut u64, *mut c_char, usize) -> c_int;
type GraphFree = unsafe extern "C" fn(*mut RawGraph);

/// The CUDA graph library, opened once libtorch_cuda.so is loaded, kept for the life of
/// the process.
pub(crate) struct GraphShim {
    begin: GraphBegin,
    end: GraphCall,
    replay: GraphCall,
    pool_bytes: GraphPoolBytes,
    free: GraphFree,
    /// Never dropped (the value lives in a `static`): the function pointers point into it.
    _library: Library,
}

impl std::fmt::Debug for GraphShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphShim").finish_non_exhaustive()
    }
}

impl GraphShim {
    /// Opens the embedded library from an anonymous in-memory file (`memfd_create`: no
    /// file on disk, nothing to clean up). Call only after `TorchCuda::open`: the library
    /// needs libtorch_cuda.so, which the dynamic loader then finds already loaded.
    pub(crate) fn open(_cuda: &'static TorchCuda) -> Result<Self, String> {
        use std::io::Write;
        use std::os::fd::FromRawFd;

        let name = c"mica_torch_cuda_graph";
        // SAFETY: `name` is a NUL-terminated string; memfd_create returns a new file
        // descriptor or -1, and touches no memory of ours.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "memfd_create failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns; the File closes it.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(CUDA_GRAPH_LIBRARY)
            .map_err(|e| format!("cannot write the CUDA graph library: {e}"))?;
        let path = format!("/proc/self/fd/{fd}");
        // SAFETY: the library's static initializers are those of a C++ shared object
        // that only defines functions (no global state beyond libstdc++'s); its
        // dependencies (libtorch_cuda.so, libc10_cuda.so, ...) are already loaded, so
        // loading runs no other initializer. It stays loaded for the process.
        let library = unsafe { Library::new(&path) }
            .map_err(|e| format!("cannot load the CUDA graph library: {e}"))?;
        drop(file);
        // SAFETY: every type matches the declaration in cuda_graph_shim.cpp (checked by
        // the ABI version below); the pointers stay valid since `library` is kept with
        // them and never unloaded.
        unsafe {
            let version = *library
                .get::<GraphAbiVersion>(b"mica_cuda_graph_abi_version\0")
                .map_err(|e| e.to_string())?;
            let found = version();
            if found != CUDA_GRAPH_ABI {
                return Err(format!(
                    "the CUDA graph library has ABI version {found}, expected {CUDA_GRAPH_ABI}"
                ));
            }
            Ok(Self {
                begin: *library
                    .get::<GraphBegin>(b"mica_cuda_graph_begin\0")
                    .map_err(|e| e.to_string())?,
                end: *library
                    .get::<GraphCall>(b"mica_cuda_graph_end\0")
                    .map_err(|e| e.to_string())?,
                replay: *library
                    .get::<GraphCall>(b"mica_cuda_graph_replay\0")
                    .map_err(|e| e.to_string())?,
                pool_bytes: *library
                    .get::<GraphPoolBytes>(b"mica_cuda_graph_pool_bytes\0")
                    .map_err(|e| e.to_string())?,
                free: *library
                    .get::<GraphFree>(b"mica_cuda_graph_free\0")
                    .map_err(|e| e.to_string())?,
                _library: library,
            })
        }
    }
}

/// Runs a shim call that reports errors through a message buffer.
fn with_message(call: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<c_int, String> {
    let mut message = [0 as c_char; 1024];
    let status = call(message.as_mut_ptr(), message.len());
    if status == 0 {
        return Ok(0);
    }
    // SAFETY: the shims NUL-terminate the buffer on every error path, and the buffer was
    // zeroed before the call, so it always holds a NUL within its length.
    let text = unsafe { CStr::from_ptr(message.as_ptr()) };
    let text = text.to_string_lossy();
    // libtorch's messages end with a C++ backtrace: keep the first lines.
    let short: Vec<&str> = text.lines().take(3).collect();
    Err(short.join(" | "))
}

/// One captured CUDA graph (libtorch's `at::cuda::CUDAGraph`) and its private memory
/// pool (possibly shared with the other graphs of the same engine).
#[derive(Debug)]
pub(crate) struct CudaGraph {
    raw: NonNull<RawGraph>,
    shim: &'static GraphShim,
}

// SAFETY: a graph is a host object of libtorch's; it is used by one thread at a time
// (the engine owns it) and replays on the calling thread's current stream.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Captures what `body` queues on the calling thread's current stream of `device`
    /// (a pool stream, never the default one) into a graph. Allocations `body` makes on
    /// that stream come from a private pool: `share`'s, or a new one. If `body` fails,
    /// the capture is dropped and its error returned.
    pub(crate) fn capture<T>(
        shim: &'static GraphShim,
        device: i32,
        share: Option<&CudaGraph>,
        body: impl FnOnce() -> Result<T, String>,
    ) -> Result<(Self, T), String> {
        let mut raw: *mut RawGraph = std::ptr::null_mut();
        let share = share.map_or(std::ptr::null_mut(), |g| g.raw.as_ptr());
        // SAFETY: `share` is null or a live graph of this shim; `raw` is a valid
        // out-pointer; the message buffer is writable for its length.
        with_message(|msg, len| unsafe { (shim.begin)(device, share, &mut raw, msg, len) })?;
        let raw = NonNull::new(raw).ok_or("mica_cuda_graph_begin returned no graph")?;
        let graph = Self { raw, shim };
        // On an error, dropping `graph` ends the capture and frees it.
        let value = body()?;
        // SAFETY: `graph.raw` is a live graph whose capture is under way.
        with_message(|msg, len| unsafe { (shim.end)(graph.raw.as_ptr(), msg, len) })?;
        Ok((graph, value))
    }

    /// Launches the graph on the calling thread's current stream of its device.
    pub(crate) fn replay(&self) -> Result<(), String> {
        // SAFETY: `raw` is a live, instantiated graph of this shim.
        with_message(|msg, len| unsafe { (self.shim.replay)(self.raw.as_ptr(), msg, len) })
            .map(|_| ())
    }

    /// Bytes reserved by the graph's memory pool, and bytes of it in live tensors.
    pub(crate) fn pool_bytes(&self) -> Result<(u64, u64), String> {
        let (mut reserved, mut allocated) = (0_u64, 0_u64);
        // SAFETY: `raw` is a live graph; both out-pointers are to live `u64`s.
        with_message(|msg, len| unsafe {
            (self.shim.pool_bytes)(self.raw.as_ptr(), &mut reserved, &mut allocated, msg, len)
        })?;
        Ok((reserved, allocated))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mica_cuda_graph_begin and is freed exactly once, here.
        unsafe { (self.shim.free)(self.raw.as_ptr()) }
    }
}

// --------------------------------------------------------- AOTInductor packages

extern "C" {
    fn mica_aoti_load(
        path: *const c_char,
        device: c_int,
        out: *mut *mut RawPackage,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mica_aoti_metadata(
        package: *mut RawPackage,
        key: *const c_char,
        value: *mut c_char,
        value_len: usize,
    ) -> c_int;
    fn mica_aoti_run(
        package: *mut RawPackage,
        input: *const c_void,
        stream: *mut c_void,
        output: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mica_aoti_free(package: *mut RawPackage);
}

/// An opaque `mica_aoti_package*` of the shim.
#[repr(C)]
struct RawPackage {
    _private: [u8; 0],
}

/// An AOTInductor package (`.pt2`) loaded through libtorch's
/// `torch::inductor::AOTIModelPackageLoader`.
#[derive(Debug)]
pub(crate) struct AotiPackage {
    raw: NonNull<RawPackage>,
}

// SAFETY: the loader is a host object; the engine that owns it uses it from one thread at
// a time (libtorch's runner takes its own lock around each run).
unsafe impl Send for AotiPackage {}

impl AotiPackage {
    /// Loads the package at `path` for CUDA device `device`, or for the CPU (`None`).
    ///
    /// One load at a time in the process: libtorch's package loader parses every JSON
    /// file of a package into one function-local `static nlohmann::json`
    /// (`load_json_file` in `model_package_loader.cpp`), so two threads loading at once
    /// race on it, and each load `dlopen`s the package's library, whose initialisers
    /// call into CUDA under the dynamic loader's lock. A unit's stream workers each
    /// load their own copy, so without this lock they would load in parallel.
    pub(crate) fn load(path: &Path, device: Option<i32>) -> Result<Self, String> {
        use std::os::unix::ffi::OsStrExt;
        static ONE_LOAD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| "the path holds a NUL byte".to_owned())?;
        // A load that panicked left no state behind that the next one depends on.
        let _one_at_a_time = ONE_LOAD_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tracing::info!(package = %path.display(), ?device, "loading aotinductor package");
        let mut raw: *mut RawPackage = std::ptr::null_mut();
        // SAFETY: `c_path` is NUL-terminated and outlives the call; `raw` is a valid
        // out-pointer; the shim catches every C++ exception.
        with_message(|msg, len| unsafe {
            mica_aoti_load(c_path.as_ptr(), device.unwrap_or(-1), &mut raw, msg, len)
        })?;
        let raw = NonNull::new(raw).ok_or("mica_aoti_load returned no package")?;
        Ok(Self { raw })
    }

    /// The package's metadata value for `key`, if it has one.
    pub(crate) fn metadata(&self, key: &str) -> Result<Option<String>, String> {
        let c_key = std::ffi::CString::new(key).map_err(|_| "NUL in key".to_owned())?;
        let mut value = [0 as c_char; 512];
        // SAFETY: `raw` is a live package; `c_key` is NUL-terminated; `value` is a
        // zeroed, writable buffer of the length passed, NUL-terminated by the shim.
        let status = unsafe {
            mica_aoti_metadata(
                self.raw.as_ptr(),
                c_key.as_ptr(),
                value.as_mut_ptr(),
                value.len(),
            )
        };
        // SAFETY: as above: the buffer always holds a NUL within its length.
        let text = unsafe { CStr::from_ptr(value.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        match status {
            0 => Ok(Some(text)),
            2 => Ok(None),
            _ => Err(text),
        }
    }

    /// Runs the package on `input` on `stream` (None: the current stream; CPU packages
    /// ignore it) and returns its one output tensor.
    pub(crate) fn run(
        &self,
        input: &Tensor,
        stream: Option<&CudaStream>,
    ) -> Result<Tensor, String> {
        let stream = stream.map_or(std::ptr::null_mut(), |s| s.raw.as_ptr());
        let mut output: *mut c_void = std::ptr::null_mut();
        // SAFETY: tch's tensor handle is an `at::Tensor*` (torch-sys: `typedef
        // torch::Tensor *tensor`), live for the call since `input` is borrowed; `stream`
        // is null or a libtorch pool stream; `output` is a valid out-pointer.
        with_message(|msg, len| unsafe {
            mica_aoti_run(
                self.raw.as_ptr(),
                input.as_ptr().cast::<c_void>(),
                stream,
                &mut output,
                msg,
                len,
            )
        })?;
        if output.is_null() {
            return Err("the package returned no tensor".to_owned());
        }
        // SAFETY: the shim returned a fresh `new at::Tensor` that nobody else owns; tch
        // takes it and frees it with `delete` when the Tensor drops.
        Ok(unsafe { Tensor::from_ptr(output.cast()) })
    }
}

impl Drop for AotiPackage {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mica_aoti_load and is freed exactly once, here.
        unsafe { mica_aoti_free(self.raw.as_ptr()) }
    }
}
