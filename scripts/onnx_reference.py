#!/usr/bin/env python3
"""ONNX Runtime's own Python API on a model, as the reference `mica bench` is compared
with: one InferenceSession on the CPU provider with the given intra-op threads and full
graph optimisation (what mica's onnx engine sets), one client running batches back to
back on a zero input (what `mica bench` offers a CPU unit when it sends no data).

Prints one JSON object per batch size: throughput (images/s) and latency percentiles.

  python3 scripts/onnx_reference.py MODEL --threads 16 --batches 1,8 --duration 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy
import onnxruntime


def measure(session: onnxruntime.InferenceSession, name: str, shape: list[int], batch: int,
            duration: float, warmup: float) -> dict:
    data = numpy.zeros([batch] + shape, dtype=numpy.float32)
    end_warmup = time.perf_counter() + warmup
    while time.perf_counter() < end_warmup:
        session.run(None, {name: data})
    latencies = []
    start = time.perf_counter()
    while True:
        began = time.perf_counter()
        session.run(None, {name: data})
        done = time.perf_counter()
        latencies.append(done - began)
        if done - start >= duration:
            break
    elapsed = time.perf_counter() - start
    latencies.sort()

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

    return {"batch": batch, "batches": len(latencies), "seconds": elapsed,
            "throughput_img_s": batch * len(latencies) / elapsed,
            "p50_ms": percentile(0.50), "p99_ms": percentile(0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(args.model, options,
                                           providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = [int(d) for d in model_input.shape[1:]]
    for batch in [int(b) for b in args.batches.split(",")]:
        result = measure(session, model_input.name, shape, batch, args.duration, args.warmup)
        result.update({"onnxruntime": onnxruntime.__version__, "threads": args.threads,
                       "library": onnxruntime.__file__})
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
