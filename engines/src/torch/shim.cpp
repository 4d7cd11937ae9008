// A tiny C ABI over the parts of libtorch's C++ API that tch 0.24 does not expose.
// Built by engines/build.rs (feature `torch`) against the headers of the same
// libtorch that torch-sys links; called only from engines/src/torch/ffi.rs. Everything
// here lives in libtorch_cpu.so (CUDA graphs, which need libtorch_cuda.so, are in
// cuda_graph_shim.cpp, a separate library opened at run time).
//
// TF32: libtorch decides per operation class (cuDNN convolutions, cuBLAS matrix
// products, RNNs) from process-wide settings in at::globalContext(); there is no
// per-thread or per-stream switch for convolutions. mica sets it once per process.

#include <ATen/Context.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void copy_message(const char* message, char* buffer, std::size_t length) {
  if (buffer == nullptr || length == 0) {
    return;
  }
  std::strncpy(buffer, message, length - 1);
  buffer[length - 1] = '\0';
}

template <typename F>
int guarded(char* error, std::size_t error_len, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), error, error_len);
    return 1;
  } catch (...) {
    copy_message("unknown C++ exception", error, error_len);
    return 1;
  }
}

}  // namespace

// An AOTInductor package (.pt2) loaded by libtorch's package loader.
struct mica_aoti_package {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
};

extern "C" {

// Allows (allow != 0) or forbids TF32 for FP32 convolutions, matrix products and RNNs
// on CUDA devices, process-wide. Returns 0 on success, 1 with a message otherwise.
int mica_torch_set_cuda_tf32(int allow, char* error, std::size_t error_len) {
  try {
    const auto precision =
        allow != 0 ? at::Float32Precision::TF32 : at::Float32Precision::IEEE;
    auto& context = at::globalContext();
    context.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, precision);
    context.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, precision);
    context.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::RNN, precision);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), error, error_len);
    return 1;
  } catch (...) {
    copy_message("unknown C++ exception", error, error_len);
    return 1;
  }
}

// Reads back whether TF32 is allowed for CUDA convolutions and matrix products.
// Returns 0 on success, 1 otherwise.
int mica_torch_cuda_tf32(int* conv, int* matmul) {
  if (conv == nullptr || matmul == nullptr) {
    return 1;
  }
  try {
    auto& context = at::globalContext();
    *conv = context.float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV) ==
                    at::Float32Precision::TF32
                ? 1
                : 0;
    *matmul = context.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
                      at::Float32Precision::TF32
                  ? 1
                  : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

// Loads the AOTInductor package at `path` (model "model", one runner) for CUDA device
// `device`, or for the CPU when `device` < 0; writes the package to `*out`. The loader
// extracts the package into a temporary folder and opens its compiled library.
int mica_aoti_load(const char* path, int device, mica_aoti_package** out, char* error,
                   std::size_t error_len) {
  if (path == nullptr || out == nullptr) {
    copy_message("null argument", error, error_len);
    return 1;
  }
  *out = nullptr;
  return guarded(error, error_len, [&] {
    auto package = std::make_unique<mica_aoti_package>();
    package->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        std::string(path), "model", false, 1,
        static_cast<c10::DeviceIndex>(device < 0 ? -1 : device));
    *out = package.release();
  });
}

// Copies the package's metadata value for `key` into `value` (NUL-terminated). Returns
// 0 when found, 2 when the package has no such key, 1 on an error.
int mica_aoti_metadata(mica_aoti_package* package, const char* key, char* value,
                       std::size_t value_len) {
  if (package == nullptr || key == nullptr) {
    copy_message("null argument", value, value_len);
    return 1;
  }
  try {
    const auto metadata = package->loader->get_metadata();
    const auto found = metadata.find(key);
    if (found == metadata.end()) {
      return 2;
    }
    copy_message(found->second.c_str(), value, value_len);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), value, value_len);
    return 1;
  } catch (...) {
    copy_message("unknown C++ exception", value, value_len);
    return 1;
  }
}

// Runs the package on one input tensor (`input` is an at::Tensor*, as tch's tensors
// are) on CUDA stream `stream` (null: the current stream; ignored for CPU packages).
// The package must return exactly one tensor, written to `*output` as a new
// at::Tensor* that the caller owns (tch frees it).
int mica_aoti_run(mica_aoti_package* package, const void* input, void* stream, void** output,
                  char* error, std::size_t error_len) {
  if (package == nullptr || input == nullptr || output == nullptr) {
    copy_message("null argument", error, error_len);
    return 1;
  }
  *output = nullptr;
  return guarded(error, error_len, [&] {
    std::vector<at::Tensor> inputs{*static_cast<const at::Tensor*>(input)};
    auto outputs = package->loader->run(inputs, stream);
    if (outputs.size() != 1) {
      throw std::runtime_error("the package returned " + std::to_string(outputs.size()) +
                               " tensors, expected 1");
    }
    *output = new at::Tensor(std::move(outputs[0]));
  });
}

// Frees a package loaded by mica_aoti_load.
void mica_aoti_free(mica_aoti_package* package) {
  try {
    delete package;
  } catch (...) {
    // A destructor that throws leaves nothing to clean up here.
  }
}

}  // extern "C"
