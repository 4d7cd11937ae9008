#!/usr/bin/env python3
"""tritonclient.http against `mica serve` running the tiny ONNX model on real onnx
units (config/tiny-onnx-cpu.toml): the fixture batch, one request per image and a
batch of 4 as one request, each output within 1e-5 (relative, L2) of ONNX Runtime's
own Python output committed beside the model (engines/tests/fixtures/tiny_onnx.json).

  python3 scripts/tritonclient_onnx_check.py --url 127.0.0.1:8000 --fixtures DIR
Prints "<n> passed, <m> failed" last; exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy
import tritonclient.http as http


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--fixtures", type=pathlib.Path, required=True)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    description = json.loads((args.fixtures / "tiny_onnx.json").read_text())
    inputs = numpy.fromfile(args.fixtures / description["input"]["file"], dtype="<f4")
    inputs = inputs.reshape(description["input"]["shape"])
    expected = numpy.fromfile(args.fixtures / description["expected"]["file"], dtype="<f4")
    expected = expected.reshape(description["expected"]["shape"])

    client = http.InferenceServerClient(url=args.url)
    passed = failed = 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal passed, failed
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
        passed, failed = passed + ok, failed + (not ok)

    check("server ready", client.is_server_ready())
    config = client.get_model_config(args.model)
    units = {k: v for k, v in config.get("parameters", {}).items() if k.startswith("unit.")}
    check("model config names the units' engine and provider",
          bool(units) and all("engine onnx" in v["string_value"] for v in units.values()),
          json.dumps(units))

    def infer(batch: numpy.ndarray) -> numpy.ndarray:
        tensor = http.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        output = http.InferRequestedOutput("output", binary_data=True)
        return client.infer(args.model, [tensor], outputs=[output]).as_numpy("output")

    def relative(got: numpy.ndarray, want: numpy.ndarray) -> float:
        return float(numpy.linalg.norm(got - want) / numpy.linalg.norm(want))

    whole = infer(inputs)
    error = relative(whole, expected)
    check("the batch of 4 as one request", error <= 1e-5, f"relative error {error:.2e}")
    for i in range(inputs.shape[0]):
        one = infer(inputs[i : i + 1])
        error = relative(one, expected[i : i + 1])
        check(f"image {i} alone", error <= 1e-5, f"relative error {error:.2e}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
