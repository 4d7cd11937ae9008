// A tiny C ABI over the parts of libtorch's C++ API that tch 0.24 does not expose.
// Built by engines/build.rs (feature `torch`) against the headers of the same
// libtorch that torch-sys links; called only from engines/src/torch/ffi.rs.
//
// TF32: libtorch decides per operation class (cuDNN convolutions, cuBLAS matrix
// products, RNNs) from process-wide settings in at::globalContext(); there is no
// per-thread or per-stream switch for convolutions. mica sets it once per process.

#include <ATen/Context.h>

#include <cstddef>
#include <cstring>
#include <exception>

namespace {

void copy_message(const char* message, char* buffer, std::size_t length) {
  if (buffer == nullptr || length == 0) {
    return;
  }
  std::strncpy(buffer, message, length - 1);
  buffer[length - 1] = '\0';
}

}  // namespace

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

}  // extern "C"
