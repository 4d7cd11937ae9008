#!/usr/bin/env python3
"""Checks a running `mica serve` with Triton's own HTTP client, unmodified.

Usage: scripts/tritonclient_check.py [--url 127.0.0.1:8000] [--model NAME]
       [--wait-ready SECONDS] [--deterministic]

Covers: liveness and readiness, server metadata and its extensions, model metadata,
model config (Triton's field names), inference with JSON tensors and with the binary
tensor data extension, the classification extension, raw images (when the model has a
BYTES input), statistics, and an error answer. Prints one line per check and exits
non-zero on the first mismatch. Needs `pip install tritonclient[http]` (numpy comes
with it).
"""

import argparse
import struct
import sys
import time
import zlib

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

PASSED = []


def check(condition, what):
    if not condition:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    PASSED.append(what)
    print(f"ok   {what}", flush=True)


def wait_ready(client, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.is_server_ready():
                return True
        except Exception:  # noqa: BLE001 - the server may not be listening yet
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def png(width, height):
    """A small RGB PNG, made without PIL."""
    raw = b"".join(
        b"\x00" + b"".join(bytes(((x * 13) % 256, (y * 7) % 256, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def parse_class(entry):
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    parts = text.split(":", 2)
    return float(parts[0]), int(parts[1]), (parts[2] if len(parts) > 2 else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="default: the first in the index")
    parser.add_argument("--wait-ready", type=float, default=30.0)
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="also require JSON and binary answers to the same input to be equal",
    )
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(url=args.url)
    check(wait_ready(client, args.wait_ready), f"server ready within {args.wait_ready}s")
    check(client.is_server_live(), "server live")

    server = client.get_server_metadata()
    check(server.get("name") == "mica", "server metadata names mica")
    extensions = set(server.get("extensions", []))
    for extension in ("binary_tensor_data", "classification", "model_configuration", "statistics"):
        check(extension in extensions, f"server metadata lists extension {extension}")

    index = client.get_model_repository_index()
    check(len(index) >= 1 and index[0].get("state") == "READY", "repository index lists a ready model")
    model = args.model or index[0]["name"]
    check(client.is_model_ready(model), f"model {model} ready")

    meta = client.get_model_metadata(model)
    check(meta["name"] == model, "model metadata name")
    fp32 = [t for t in meta["inputs"] if t["datatype"] == "FP32"]
    images_in = [t for t in meta["inputs"] if t["datatype"] == "BYTES"]
    check(len(fp32) == 1, "model metadata has one FP32 input")
    check(len(meta["outputs"]) == 1 and meta["outputs"][0]["datatype"] == "FP32", "one FP32 output")
    input_meta, output_meta = fp32[0], meta["outputs"][0]
    check(input_meta["shape"][0] == -1, "input shape has a variable batch dimension")

    config = client.get_model_config(model)
    check(config["name"] == model, "model config name")
    max_batch = int(config["max_batch_size"])
    check(max_batch >= 1, "model config max_batch_size")
    config_input = next(i for i in config["input"] if i["name"] == input_meta["name"])
    check(config_input["data_type"] == "TYPE_FP32", "model config input data_type")
    check([int(d) for d in config_input["dims"]] == input_meta["shape"][1:], "config dims match metadata")
    config_output = config["output"][0]
    check([int(d) for d in config_output["dims"]] == output_meta["shape"][1:], "config output dims")
    has_labels = bool(config_output.get("label_filename"))

    batch = min(2, max_batch)
    shape = [batch] + input_meta["shape"][1:]
    rng = np.random.default_rng(7)
    data = rng.standard_normal(shape).astype(np.float32)
    out_shape = [batch] + output_meta["shape"][1:]
    classes = int(np.prod(output_meta["shape"][1:]))

    made = {"successes": 0}

    def infer(binary, class_count=0, **kwargs):
        tensor = httpclient.InferInput(input_meta["name"], shape, "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        wanted = httpclient.InferRequestedOutput(
            output_meta["name"], binary_data=binary, class_count=class_count
        )
        result = client.infer(model, [tensor], outputs=[wanted], request_id="check-1", **kwargs)
        made["successes"] += 1
        return result

    json_result = infer(binary=False)
    values = json_result.as_numpy(output_meta["name"])
    check(values is not None and list(values.shape) == out_shape, f"JSON infer output shape {out_shape}")
    check(values.dtype == np.float32 and np.all(np.isfinite(values)), "JSON infer output is finite FP32")
    check(json_result.get_response().get("id") == "check-1", "response echoes the request id")

    binary_result = infer(binary=True, priority=1, timeout=10_000_000)
    binary_values = binary_result.as_numpy(output_meta["name"])
    check(list(binary_values.shape) == out_shape, "binary infer output shape")
    output_info = binary_result.get_output(output_meta["name"])
    check("binary_data_size" in output_info.get("parameters", {}), "binary output announced by size")
    if args.deterministic:
        check(np.allclose(values, binary_values), "JSON and binary answers agree")

    top = min(3, classes)
    classified = infer(binary=False, class_count=top).as_numpy(output_meta["name"])
    check(list(classified.shape) == [batch, top], f"classification shape [{batch}, {top}]")
    for row in classified:
        parsed = [parse_class(entry) for entry in row]
        scores = [score for score, _, _ in parsed]
        check(scores == sorted(scores, reverse=True), "classification scores descend")
        check(all(0 <= index < classes for _, index, _ in parsed), "classification indices in range")
        if has_labels:
            check(all(label for _, _, label in parsed), "classification entries carry labels")
    classified_binary = infer(binary=True, class_count=top).as_numpy(output_meta["name"])
    check(list(classified_binary.shape) == [batch, top], "binary classification shape")

    if images_in:
        image = np.array([png(37, 23)], dtype=np.object_)
        tensor = httpclient.InferInput(images_in[0]["name"], [1], "BYTES")
        tensor.set_data_from_numpy(image, binary_data=True)
        result = client.infer(model, [tensor])
        made["successes"] += 1
        check(list(result.as_numpy(output_meta["name"]).shape) == [1] + out_shape[1:], "raw PNG infer")

    wrong = httpclient.InferInput(input_meta["name"], [1, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros([1, 1], dtype=np.float32), binary_data=False)
    try:
        client.infer(model, [wrong])
        check(False, "a wrong shape is refused")
    except InferenceServerException as error:
        check(error.status() == "400" and "shape" in error.message(), "a wrong shape is a 400 naming it")
    try:
        client.get_model_metadata("no-such-model")
        check(False, "an unknown model is refused")
    except InferenceServerException as error:
        check(error.status() == "404", "an unknown model is a 404")

    stats = client.get_inference_statistics(model)["model_stats"][0]
    successes = int(stats["inference_stats"]["success"]["count"])
    check(
        stats["name"] == model and successes >= made["successes"],
        f"statistics count {successes} successes (this check made {made['successes']})",
    )
    check(int(stats["inference_stats"]["fail"]["count"]) >= 1, "statistics count the failure")

    client.close()
    print(f"{len(PASSED)} passed, 0 failed")


if __name__ == "__main__":
    main()
