//! Process-wide CUDA state of the torch engine: loading libtorch_cuda.so once, checking
//! the device, the TF32 setting and cuDNN autotuning.
//!
//! **TF32 is process-wide.** libtorch reads it for every cuDNN convolution and cuBLAS
//! matrix product from one global setting; there is no per-thread or per-stream switch
//! for convolutions (`at::NoTF32Guard` only covers cuBLAS). So the first CUDA FP32 unit
//! built decides it for the whole process (`cuda_fp32`: off, `cuda_tf32`: on), and a unit
//! that needs the other setting is refused with a clear error rather than silently run in
//! the wrong precision. Run `cuda_fp32` and `cuda_tf32` units in separate mica processes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mica_core::UnitKind;
use parking_lot::Mutex;
use tracing::info;

use super::ffi::{self, GraphShim, TorchCuda};
use crate::engine::EngineError;

/// The library file name.
const LIBTORCH_CUDA: &str = "libtorch_cuda.so";

static CUDA: OnceLock<Result<TorchCuda, String>> = OnceLock::new();

static GRAPHS: OnceLock<Result<GraphShim, String>> = OnceLock::new();

/// The TF32 setting claimed for this process, and the unit kind that claimed it.
static TF32: Mutex<Option<(bool, UnitKind)>> = Mutex::new(None);

/// Loads libtorch_cuda.so, once per process.
///
/// libtorch looks up its CUDA hooks once and keeps what it found: if anything asks for
/// CUDA before the library is loaded, CUDA stays unavailable for the life of the process.
/// So the service calls this at start, before building any engine, whenever a CUDA unit
/// is configured.
pub(crate) fn load() -> Result<&'static TorchCuda, EngineError> {
    CUDA.get_or_init(load_libtorch_cuda)
        .as_ref()
        .map_err(|e| EngineError::Load(e.clone()))
}

/// Held by a CUDA engine's warm-up (eager batches and graph capture): one at a time per
/// process, so that no warm-up synchronizes the device while another captures.
static WARM_UP: Mutex<()> = Mutex::new(());

/// Takes the process-wide warm-up lock (see [`WARM_UP`]).
pub(crate) fn warm_up_lock() -> parking_lot::MutexGuard<'static, ()> {
    WARM_UP.lock()
}

/// The CUDA graph library (`cuda_graph_shim.cpp`), opened once per process after
/// libtorch_cuda.so.
pub(crate) fn graph_shim() -> Result<&'static GraphShim, EngineError> {
    let cuda = load()?;
    GRAPHS
        .get_or_init(|| GraphShim::open(cuda))
        .as_ref()
        .map_err(|e| EngineError::Load(format!("CUDA graphs are unavailable: {e}")))
}

/// Loads libtorch_cuda.so (once per process) and checks that `device` exists.
pub(crate) fn runtime(device: usize) -> Result<&'static TorchCuda, EngineError> {
    let cuda = load()?;
    if !tch::Cuda::is_available() {
        return Err(EngineError::Load(format!(
            "libtorch sees no CUDA device (libtorch_cuda loaded from {}); \
             check the NVIDIA driver and CUDA_VISIBLE_DEVICES, and that the service loads \
             libtorch_cuda (mica_engines::torch::load_cuda) before any engine runs",
            cuda.path().display()
        )));
    }
    let count = tch::Cuda::device_count();
    if i64::try_from(device).map_or(true, |d| d >= count) {
        return Err(EngineError::Load(format!(
            "cuda:{device} does not exist: libtorch sees {count} CUDA device(s)"
        )));
    }
    // Autotune convolution algorithms per input shape; warm-up runs the shapes first.
    tch::Cuda::cudnn_set_benchmark(true);
    Ok(cuda)
}

/// Makes the process-wide TF32 setting `allow`, or fails if another unit already set the
/// opposite.
pub(crate) fn claim_tf32(allow: bool, kind: UnitKind) -> Result<(), EngineError> {
    let mut claim = TF32.lock();
    match *claim {
        Some((current, _)) if current == allow => Ok(()),
        Some((_, owner)) => Err(EngineError::Load(format!(
            "a {kind} unit needs TF32 {} but a {owner} unit in this process already turned \
             it {}: libtorch's TF32 switch for cuDNN convolutions is process-wide, so \
             cuda_fp32 and cuda_tf32 units must run in separate mica processes",
            on_off(allow),
            on_off(!allow),
        ))),
        None => {
            ffi::set_cuda_tf32(allow).map_err(|e| {
                EngineError::Load(format!("could not turn TF32 {}: {e}", on_off(allow)))
            })?;
            let (conv, matmul) = ffi::cuda_tf32().map_err(EngineError::Load)?;
            if conv != allow || matmul != allow {
                return Err(EngineError::Load(format!(
                    "libtorch did not take the TF32 setting: convolutions {}, matrix \
                     products {} (wanted {})",
                    on_off(conv),
                    on_off(matmul),
                    on_off(allow)
                )));
            }
            info!(tf32 = allow, unit_kind = %kind, "set libtorch's process-wide TF32 mode");
            *claim = Some((allow, kind));
            Ok(())
        }
    }
}

fn on_off(value: bool) -> &'static str {
    if value {
        "on"
    } else {
        "off"
    }
}

/// Tries the candidate locations in order; the error lists every attempt.
fn load_libtorch_cuda() -> Result<TorchCuda, String> {
    let mut attempts = Vec::new();
    for candidate in libtorch_cuda_candidates() {
        match TorchCuda::open(&candidate) {
            Ok(cuda) => {
                info!(path = %candidate.display(), "loaded libtorch_cuda");
                return Ok(cuda);
            }
            Err(e) => attempts.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(format!(
        "CUDA units need {LIBTORCH_CUDA} and the CUDA libraries it depends on (cuBLAS, \
         cuDNN, ...), which could not be loaded; put the folder of the libtorch this binary \
         runs with in LD_LIBRARY_PATH, or set LIBTORCH. Tried: {}",
        attempts.join("; ")
    ))
}

/// Where libtorch_cuda.so may be: beside the libtorch_cpu.so this process has loaded
/// (the only copy that is certain to match), under `$LIBTORCH/lib`, then wherever the
/// dynamic loader finds it.
fn libtorch_cuda_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        if let Some(dir) = loaded_library_dir(&maps, "libtorch_cpu.so") {
            candidates.push(dir.join(LIBTORCH_CUDA));
        }
    }
    if let Some(root) = std::env::var_os("LIBTORCH") {
        let path = Path::new(&root).join("lib").join(LIBTORCH_CUDA);
        if !candidates.contains(&path) {
            candidates.push(path);
        }
    }
    candidates.push(PathBuf::from(LIBTORCH_CUDA));
    candidates
}

/// The folder of a shared library named `file_name` in a `/proc/<pid>/maps` listing.
fn loaded_library_dir(maps: &str, file_name: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| path.file_name().is_some_and(|name| name == file_name))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_folder_of_a_loaded_library() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000002000-7f0000003000 r-xp 00001000 fd:01 456 /opt/torch/lib/libtorch_cpu.so
7f0000004000-7f0000005000 rw-p 00000000 00:00 0
7f0000006000-7f0000007000 r--p 00000000 fd:01 789 /opt/torch/lib/libtorch_cpu.so.bak";
        assert_eq!(
            loaded_library_dir(maps, "libtorch_cpu.so"),
            Some(PathBuf::from("/opt/torch/lib"))
        );
        assert_eq!(loaded_library_dir(maps, "libtorch_cuda.so"), None);
    }

    #[test]
    fn this_process_has_libtorch_cpu_loaded() {
        // Linking tch makes libtorch_cpu.so a dependency of every test binary.
        let maps = std::fs::read_to_string("/proc/self/maps").expect("linux");
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        let dir = loaded_library_dir(&maps, "libtorch_cpu.so").expect("libtorch_cpu loaded");
        assert!(dir.join("libtorch_cpu.so").is_file(), "{}", dir.display());
        assert_eq!(
            libtorch_cuda_candidates().first(),
            Some(&dir.join(LIBTORCH_CUDA))
        );
    }

    #[test]
    fn tf32_switch_round_trips() {
        // The setting exists in every libtorch build, with or without a GPU.
        let before = ffi::cuda_tf32().expect("readable");
        ffi::set_cuda_tf32(false).expect("settable");
        assert_eq!(ffi::cuda_tf32(), Ok((false, false)));
        ffi::set_cuda_tf32(true).expect("settable");
        assert_eq!(ffi::cuda_tf32(), Ok((true, true)));
        ffi::set_cuda_tf32(before.0).expect("settable");
    }
}
