//! Build script of mica-engines. Does nothing unless the `torch` feature is on; then it
//! - compiles `src/torch/shim.cpp` (TF32 control and the AOTInductor package loader,
//!   which tch 0.24 lacks; libtorch_cpu only) into a static library linked into the
//!   binary, against the headers of the libtorch that torch-sys links (`LIBTORCH`, or
//!   `LIBTORCH_INCLUDE`);
//! - compiles `src/torch/cuda_graph_shim.cpp` (CUDA graphs through at::cuda::CUDAGraph)
//!   into a *shared* library `$OUT_DIR/libmica_torch_cuda_graph.so`, linked against
//!   `$LIBTORCH/lib/libtorch_cuda.so`, which the engine embeds and opens at run time
//!   once libtorch_cuda is loaded (so a CPU-only host never needs the CUDA libraries).
//!   Its headers include the CUDA runtime's (`cuda_runtime_api.h`, `cuda.h`), which the
//!   torch wheel lacks: `MICA_CUDA_INCLUDE`, else `$LIBTORCH/../nvidia/cu13/include`,
//!   where scripts/fetch-libtorch.sh unpacks them from NVIDIA's runtime wheels;
//! - gives this package's own test binaries an RPATH to `$LIBTORCH/lib`, so they run
//!   without LD_LIBRARY_PATH (see scripts/fetch-libtorch.sh).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=src/torch/shim.cpp");
    println!("cargo:rerun-if-changed=src/torch/cuda_graph_shim.cpp");
    println!("cargo:rerun-if-env-changed=MICA_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");

    let include_root = match (env::var_os("LIBTORCH_INCLUDE"), env::var_os("LIBTORCH")) {
        (Some(include), _) => PathBuf::from(include),
        (None, Some(libtorch)) => PathBuf::from(libtorch),
        (None, None) => {
            eprintln!(
                "error: the `torch` feature needs LIBTORCH (the libtorch 2.11.0 folder); \
                 run scripts/fetch-libtorch.sh and export what it prints"
            );
            std::process::exit(1);
        }
    };
    let include = include_root.join("include");
    if !include.join("ATen/Context.h").is_file() {
        eprintln!(
            "error: {} has no ATen/Context.h: LIBTORCH must point at a libtorch folder \
             with include/ (scripts/fetch-libtorch.sh prints the right one)",
            include.display()
        );
        std::process::exit(1);
    }
    let cxx11_abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    // This package's own test binaries find libtorch without LD_LIBRARY_PATH (the
    // wheel's libraries then find the CUDA runtime through their own RPATH). Binaries of
    // other packages (the `mica` binary) still need LD_LIBRARY_PATH=<libtorch>/lib.
    if let Some(libtorch) = env::var_os("LIBTORCH") {
        let lib = PathBuf::from(libtorch).join("lib");
        if lib.is_dir() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
    }

    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={cxx11_abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/torch/shim.cpp")
        .compile("mica_torch_shim");

    let lib_dir = env::var_os("LIBTORCH")
        .map(|root| PathBuf::from(root).join("lib"))
        .unwrap_or_else(|| include_root.join("lib"));
    build_cuda_graph_library(&include, &include_root, &lib_dir, &cxx11_abi);
}

/// Compiles and links `src/torch/cuda_graph_shim.cpp` into
/// `$OUT_DIR/libmica_torch_cuda_graph.so` (see the file's header).
fn build_cuda_graph_library(include: &Path, include_root: &Path, lib_dir: &Path, abi: &str) {
    let cuda_include = env::var_os("MICA_CUDA_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| include_root.join("../nvidia/cu13/include"));
    if !cuda_include.join("cuda_runtime_api.h").is_file()
        || !cuda_include.join("crt/host_config.h").is_file()
    {
        eprintln!(
            "error: no CUDA runtime headers in {} (cuda_runtime_api.h, crt/host_config.h):              the torch feature compiles its CUDA graph library against them; run              scripts/fetch-libtorch.sh (it unpacks them from the nvidia-cuda-runtime and              nvidia-cuda-crt wheels) or set MICA_CUDA_INCLUDE",
            cuda_include.display()
        );
        std::process::exit(1);
    }
    if !lib_dir.join("libtorch_cuda.so").is_file() {
        eprintln!(
            "error: {} has no libtorch_cuda.so, which the CUDA graph library links against",
            lib_dir.display()
        );
        std::process::exit(1);
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out.join("libmica_torch_cuda_graph.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut command: Command = compiler.to_command();
    command
        .args(["-shared", "-fPIC", "-O2", "-s", "-std=c++17", "-w"])
        .arg(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .arg("-DGLOG_USE_GLOG_EXPORT")
        .arg("-I")
        .arg(include)
        .arg("-I")
        .arg(include.join("torch/csrc/api/include"))
        .arg("-I")
        .arg(&cuda_include)
        .arg("src/torch/cuda_graph_shim.cpp")
        .arg("-o")
        .arg(&library)
        .arg(format!("-L{}", lib_dir.display()))
        // Needed at load: the engine opens this library after libtorch_cuda.so, whose
        // soname then matches the copy already in the process.
        .args([
            "-Wl,--no-as-needed",
            "-ltorch_cuda",
            "-lc10_cuda",
            "-ltorch_cpu",
            "-lc10",
        ])
        // libtorch_cuda's own dependencies (cuBLAS, cuDNN, ...) are not on a CPU host.
        .arg("-Wl,--allow-shlib-undefined");
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {command:?}: {e}"));
    if !status.success() {
        eprintln!("error: building {} failed: {command:?}", library.display());
        std::process::exit(1);
    }
}
