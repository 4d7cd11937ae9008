//! Build script of mica-engines. Does nothing unless the `torch` feature is on; then it
//! compiles `src/torch/shim.cpp` (TF32 control, which tch 0.24 lacks) against the
//! headers of the libtorch that torch-sys links (`LIBTORCH`, or `LIBTORCH_INCLUDE`), and
//! gives this package's own test binaries an RPATH to `$LIBTORCH/lib`, so they run
//! without LD_LIBRARY_PATH (see scripts/fetch-libtorch.sh).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=src/torch/shim.cpp");
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
}
