// CUDA graph capture and replay through libtorch's own at::cuda::CUDAGraph, as a C ABI.
//
// Built by engines/build.rs into a *shared* library (libmica_torch_cuda_graph.so) linked
// against libtorch_cuda.so and libc10_cuda.so, embedded into the binary and opened at run
// time (engines/src/torch/ffi.rs, `GraphShim`) only after libtorch_cuda.so is loaded: a
// CPU-only host never needs the CUDA libraries, and the mica binary itself links nothing
// of CUDA (see DEVICE.md, trap 1).
//
// Why at::cuda::CUDAGraph and not raw stream capture: during capture every tensor the
// model allocates comes from libtorch's caching allocator. CUDAGraph::capture_begin
// routes those allocations (for the capturing stream only) into a private memory pool
// that lives as long as the graph, so no block the graph's kernels write is handed to
// anybody else between replays; raw cudaStreamBeginCapture would leave those blocks in
// the general pool, to be reused by the next tensor while the graph still writes them.
//
// Every function catches every C++ exception and reports it as status 1 with a message.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>

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

struct mica_cuda_graph {
  at::cuda::CUDAGraph graph;
  c10::DeviceIndex device;
  bool capturing = false;
};

extern "C" {

// The ABI version of this library; ffi.rs refuses a library of another version.
int mica_cuda_graph_abi_version() { return 1; }

// Starts capturing the calling thread's current stream on `device` (it must not be the
// default stream) into a new graph, written to `*out`. Allocations made on that stream
// until mica_cuda_graph_end go to a private memory pool: `share`'s pool when `share` is
// not null (safe when the graphs are replayed one at a time, never concurrently), a new
// one otherwise. The capture mode is thread-local: other threads (other stream workers
// loading or running) may keep calling CUDA while this one captures.
int mica_cuda_graph_begin(int device, mica_cuda_graph* share, mica_cuda_graph** out,
                          char* error, std::size_t error_len) {
  if (out == nullptr) {
    copy_message("null out-pointer", error, error_len);
    return 1;
  }
  *out = nullptr;
  return guarded(error, error_len, [&] {
    const auto index = static_cast<c10::DeviceIndex>(device);
    c10::cuda::CUDAGuard guard(index);
    auto graph = std::make_unique<mica_cuda_graph>();
    graph->device = index;
    const at::cuda::MempoolId_t pool =
        share != nullptr ? share->graph.pool() : at::cuda::MempoolId_t{0, 0};
    graph->graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
    graph->capturing = true;
    *out = graph.release();
  });
}

// Ends the capture begun by mica_cuda_graph_begin and instantiates the graph.
int mica_cuda_graph_end(mica_cuda_graph* graph, char* error, std::size_t error_len) {
  if (graph == nullptr) {
    copy_message("null graph", error, error_len);
    return 1;
  }
  return guarded(error, error_len, [&] {
    c10::cuda::CUDAGuard guard(graph->device);
    graph->capturing = false;
    graph->graph.capture_end();
  });
}

// Launches the graph on the calling thread's current stream of the graph's device
// (asynchronous, like any kernel launch).
int mica_cuda_graph_replay(mica_cuda_graph* graph, char* error, std::size_t error_len) {
  if (graph == nullptr) {
    copy_message("null graph", error, error_len);
    return 1;
  }
  return guarded(error, error_len, [&] {
    c10::cuda::CUDAGuard guard(graph->device);
    graph->graph.replay();
  });
}

// The bytes of device memory held by the graph's private pool (segments reserved from
// the driver, and the part of them allocated to live tensors). A pool shared by several
// graphs is counted whole for each.
int mica_cuda_graph_pool_bytes(mica_cuda_graph* graph, std::uint64_t* reserved,
                               std::uint64_t* allocated, char* error, std::size_t error_len) {
  if (graph == nullptr || reserved == nullptr || allocated == nullptr) {
    copy_message("null argument", error, error_len);
    return 1;
  }
  return guarded(error, error_len, [&] {
    const auto pool = graph->graph.pool();
    const auto snapshot = c10::cuda::CUDACachingAllocator::snapshot(pool, false);
    std::uint64_t total = 0;
    std::uint64_t used = 0;
    for (const auto& segment : snapshot.segments) {
      if (segment.device == graph->device && segment.owner_private_pool_id == pool) {
        total += segment.total_size;
        used += segment.allocated_size;
      }
    }
    *reserved = total;
    *allocated = used;
  });
}

// Frees the graph (and its pool, once no other graph shares it). A capture still under
// way (the model failed inside it) is ended first and its result dropped.
void mica_cuda_graph_free(mica_cuda_graph* graph) {
  if (graph == nullptr) {
    return;
  }
  try {
    c10::cuda::CUDAGuard guard(graph->device);
    if (graph->capturing) {
      graph->capturing = false;
      try {
        graph->graph.capture_end();
      } catch (...) {
        // The capture was invalidated by the failure; ending it is all that matters.
      }
    }
    delete graph;
  } catch (...) {
    // Nothing sensible is left to do with a graph whose destructor throws.
  }
}

}  // extern "C"
