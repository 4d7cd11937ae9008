#!/usr/bin/env python3
"""PyTorch reference figures for ResNet-50 on one GPU, to set beside mica's.

Run by scripts/device-bench.sh in the same device call as mica (times from different
calls or machines do not compare). Configurations, each at every batch size:

  eager_fp32_notf32      eager FP32, TF32 off (cuDNN and cuBLAS)      vs cuda_fp32
  eager_fp32_tf32        eager FP32, TF32 on                          vs cuda_tf32
  autocast_fp16          eager FP32 weights under torch.autocast FP16  vs amp
  half_cl                eager, half weights and input, channels_last  vs tensor_fp16
  half_nchw              eager, half weights and input, plain NCHW     vs staged tensor_fp16
  half_cl_graph          half_cl captured once per batch size as a CUDA graph, replayed
  script_half_cl         the TorchScript file mica's tensor_fp16 unit runs
                         (resnet50_fp16.pt, scripts/export_model.py), called from Python:
                         separates TorchScript from mica's own costs
  script_fp32_notf32     the same for resnet50_fp32.pt (cuda_fp32's file), TF32 off
  half_cl_compile        half_cl through torch.compile (mode default), compiled per batch
                         size (dynamic=False); not in `all` (compiling takes a minute)
  half_cl_compile_mat    the same with mode="max-autotune-no-cudagraphs"; not in `all`

Throughput: batches issued back to back for about `--seconds`, one synchronize at the end (PyTorch's
best case: no per-batch wait), after warm-up; reported as images/s of the median of
`--repeats` such timings. Batch-1 latency: one batch at a time, synchronized, `--latency-
iters` samples, p50 and p90. cuDNN autotuning on (benchmark mode), as mica runs. Random
weights (torchvision resnet50(weights=None), seeded) and random input.

Writes one JSON document (--out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch


def build_model():
    import torchvision

    torch.manual_seed(20261123)
    return torchvision.models.resnet50(weights=None).eval()


def set_tf32(allow: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


class Config:
    """A callable per batch size plus the input it takes."""

    def __init__(self, name: str, tf32: bool) -> None:
        self.name = name
        self.tf32 = tf32

    def prepare(self, batch: int):  # -> (fn, input)
        raise NotImplementedError


class Eager(Config):
    def __init__(self, name, model, dtype, channels_last, autocast, tf32):
        super().__init__(name, tf32)
        self.autocast = autocast
        self.dtype = dtype
        self.channels_last = channels_last
        m = model.to("cuda", dtype)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        self.model = m

    def input(self, batch):
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, batch):
        x = self.input(batch)
        if self.autocast:
            def fn():
                with torch.autocast("cuda", dtype=torch.float16):
                    return self.model(x)
        else:
            def fn():
                return self.model(x)
        return fn


class Graph(Eager):
    def prepare(self, batch):
        x = self.input(batch)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.model(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self.model(x)
        return graph.replay


class Compiled(Eager):
    """half_cl through torch.compile, one static compilation per batch size."""

    def __init__(self, name, model, mode):
        super().__init__(name, model, torch.float16, True, False, False)
        self.mode = mode

    def prepare(self, batch):
        x = self.input(batch)
        started = time.perf_counter()
        compiled = torch.compile(self.model, mode=self.mode, dynamic=False)
        compiled(x)  # compiles for this shape
        torch.cuda.synchronize()
        self.compile_s = getattr(self, "compile_s", {})
        self.compile_s[str(batch)] = time.perf_counter() - started

        def fn():
            return compiled(x)

        return fn


class Script(Config):
    """A TorchScript file called from Python; takes FP32 NCHW input like mica's engine."""

    def __init__(self, name, path, tf32):
        super().__init__(name, tf32)
        self.module = torch.jit.load(str(path), map_location="cuda").eval()

    def prepare(self, batch):
        x = torch.randn(batch, 3, 224, 224, device="cuda")

        def fn():
            return self.module(x)

        return fn


def throughput(fn, batch, seconds, repeats, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    # Calibrate: batches per timing so that one timing takes about `seconds`.
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 0.05 or n < 2:
        fn()
        n += 1
    torch.cuda.synchronize()
    per_batch = (time.perf_counter() - start) / n
    iters = max(3, int(seconds / per_batch))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        rates.append(batch * iters / (time.perf_counter() - start))
    return statistics.median(rates), rates


def latency(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    p50 = statistics.median(samples)
    p90 = samples[max(0, -(-len(samples) * 9 // 10) - 1)]
    return p50, p90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--models", type=pathlib.Path, default=None,
                        help="folder of the exported TorchScript files (script_* configs)")
    parser.add_argument("--configs", default="all",
                        help="comma-separated config names, or all")
    parser.add_argument("--seconds", type=float, default=0.3,
                        help="target length of one throughput timing")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latency-iters", type=int, default=100)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 1
    torch.set_grad_enabled(False)
    torch.backends.cudnn.benchmark = True
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    base = build_model()

    import copy

    def fresh():
        return copy.deepcopy(base)

    makers = {
        "eager_fp32_notf32": lambda: Eager("eager_fp32_notf32", fresh(), torch.float32,
                                           False, False, False),
        "eager_fp32_tf32": lambda: Eager("eager_fp32_tf32", fresh(), torch.float32,
                                         False, False, True),
        "autocast_fp16": lambda: Eager("autocast_fp16", fresh(), torch.float32,
                                       False, True, False),
        "half_cl": lambda: Eager("half_cl", fresh(), torch.float16, True, False, False),
        # Plain NCHW half: what mica's staged tensor_fp16 blocks run (no channels-last).
        "half_nchw": lambda: Eager("half_nchw", fresh(), torch.float16, False, False, False),
        "half_cl_graph": lambda: Graph("half_cl_graph", fresh(), torch.float16, True,
                                       False, False),
    }
    compiled = {
        "half_cl_compile": lambda: Compiled("half_cl_compile", fresh(), "default"),
        "half_cl_compile_mat": lambda: Compiled("half_cl_compile_mat", fresh(),
                                                "max-autotune-no-cudagraphs"),
    }
    if args.models is not None:
        fp16 = args.models / "resnet50_fp16.pt"
        fp32 = args.models / "resnet50_fp32.pt"
        if fp16.is_file():
            makers["script_half_cl"] = lambda: Script("script_half_cl", fp16, False)
        if fp32.is_file():
            makers["script_fp32_notf32"] = lambda: Script("script_fp32_notf32", fp32, False)
    names = list(makers) if args.configs == "all" else args.configs.split(",")
    makers.update(compiled)

    result = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name(0),
        "batch_sizes": sizes,
        "method": {
            "throughput": f"median of {args.repeats} timings of back-to-back batches "
                          f"(~{args.seconds}s each, one synchronize at the end), after warm-up",
            "latency": f"batch 1, synchronized per batch, {args.latency_iters} samples",
            "cudnn_benchmark": True,
        },
        "configs": {},
    }
    for name in names:
        if name not in makers:
            print(f"warning: unknown or unavailable config {name}", file=sys.stderr)
            continue
        started = time.perf_counter()
        config = makers[name]()
        set_tf32(config.tf32)
        entry = {"tf32": config.tf32, "throughput_img_s": {}, "timings_img_s": {}}
        for batch in sizes:
            fn = config.prepare(batch)
            rate, rates = throughput(fn, batch, args.seconds, args.repeats, warmup=3)
            entry["throughput_img_s"][str(batch)] = rate
            entry["timings_img_s"][str(batch)] = rates
            if batch == 1:
                p50, p90 = latency(fn, args.latency_iters, warmup=10)
                entry["batch1_latency_p50_ms"] = p50
                entry["batch1_latency_p90_ms"] = p90
            print(f"  {name:<26} batch {batch:>4}: {rate:10.1f} img/s", flush=True)
            del fn
            entry["seconds"] = time.perf_counter() - started
            if hasattr(config, "compile_s"):
                entry["compile_s"] = config.compile_s
            result["configs"][name] = entry
            # Written after every figure: a run stopped by its time limit (compiling
            # max-autotune takes minutes) keeps what it measured.
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        del config
        torch.cuda.empty_cache()
    set_tf32(False)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    header = f"{'config':<26}" + "".join(f"{b:>9}" for b in sizes) + f"{'bs1 p50 ms':>12}"
    print(header)
    for name, entry in result["configs"].items():
        row = "".join(f"{entry['throughput_img_s'].get(str(b), float('nan')):>9.0f}"
                      for b in sizes)
        print(f"{name:<26}{row}{entry.get('batch1_latency_p50_ms', float('nan')):>12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
