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
