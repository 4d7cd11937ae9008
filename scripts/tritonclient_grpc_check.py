#!/usr/bin/env python3
"""Checks a running `mica serve` with Triton's own gRPC client, unmodified, and compares
its answers with the HTTP client's on the same server.

Usage: scripts/tritonclient_grpc_check.py --grpc-url 127.0.0.1:8001
       [--http-url 127.0.0.1:8000] [--model NAME] [--wait-ready SECONDS]
       [--deterministic]

Covers: liveness and readiness, server and model metadata, model config, statistics,
the repository index, inference with raw_input_contents (the client's default) and with
typed contents (through the client package's own stub), streaming inference,
classification, priority and timeout, each bad-input class with its gRPC code and the
same message text as over HTTP, an unimplemented call, and the server live throughout.
Prints one line per check and `N passed, N failed`; exits non-zero if any failed.
Needs `pip install tritonclient[grpc,http]`.
"""

import argparse
import queue
import sys
import time

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

RESULTS = {"passed": 0, "failed": 0}


def check(condition, what):
    if condition:
        RESULTS["passed"] += 1
        print(f"ok   {what}", flush=True)
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {what}", flush=True)
    return condition


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


def refused(call):
    """Runs `call`, expecting an InferenceServerException; returns it (None if none)."""
    try:
        call()
    except InferenceServerException as error:
        return error
    return None


def code(error):
    return error.status() if error is not None else "no error"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-url", default="127.0.0.1:8001")
    parser.add_argument("--http-url", default="127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="default: the first in the index")
    parser.add_argument("--wait-ready", type=float, default=30.0)
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="also require equal answers to the same input (over gRPC and HTTP)",
    )
    args = parser.parse_args()

    client = grpcclient.InferenceServerClient(url=args.grpc_url)
    http = httpclient.InferenceServerClient(url=args.http_url)
    check(wait_ready(client, args.wait_ready), f"server ready within {args.wait_ready}s")
    check(client.is_server_live(), "server live")

    server = client.get_server_metadata(as_json=True)
    check(server.get("name") == "mica", "server metadata names mica")
    check(
        set(server.get("extensions", [])) == set(http.get_server_metadata()["extensions"]),
        "server metadata lists the extensions HTTP lists",
    )
    index = client.get_model_repository_index(as_json=True).get("models", [])
    check(len(index) >= 1 and index[0].get("state") == "READY", "repository index lists a ready model")
    model = args.model or index[0]["name"]
    check(client.is_model_ready(model), f"model {model} ready")

    meta = client.get_model_metadata(model, as_json=True)
    http_meta = http.get_model_metadata(model)
    check(meta["name"] == model, "model metadata name")
    fp32 = [t for t in meta["inputs"] if t["datatype"] == "FP32"]
    check(len(fp32) == 1, "model metadata has one FP32 input")
    input_meta, output_meta = fp32[0], meta["outputs"][0]
    shape_of = lambda t: [int(d) for d in t["shape"]]  # noqa: E731
    check(
        [(t["name"], t["datatype"], shape_of(t)) for t in meta["inputs"] + meta["outputs"]]
        == [(t["name"], t["datatype"], t["shape"]) for t in http_meta["inputs"] + http_meta["outputs"]],
        "model metadata equals HTTP's",
    )
    check(shape_of(input_meta)[0] == -1, "input shape has a variable batch dimension")

    config = client.get_model_config(model, as_json=True)["config"]
    http_config = http.get_model_config(model)
    max_batch = int(config.get("max_batch_size", 0))
    check(config["name"] == model and max_batch == int(http_config["max_batch_size"]), "model config name and max_batch_size equal HTTP's")
    config_input = next(i for i in config["input"] if i["name"] == input_meta["name"])
    check(config_input["data_type"] == "TYPE_FP32", "model config input data_type")
    check([int(d) for d in config_input["dims"]] == shape_of(input_meta)[1:], "config dims match metadata")
    check(
        config["output"][0].get("label_filename", "") == http_config["output"][0]["label_filename"],
        "config label file equals HTTP's",
    )
    check(
        int(config["dynamic_batching"]["priority_levels"]) == int(http_config["dynamic_batching"]["priority_levels"]),
        "config priority levels equal HTTP's",
    )

    batch = min(2, max_batch)
    shape = [batch] + shape_of(input_meta)[1:]
    rng = np.random.default_rng(11)
    data = rng.standard_normal(shape).astype(np.float32)
    out_name = output_meta["name"]
    out_shape = [batch] + shape_of(output_meta)[1:]
    classes = int(np.prod(out_shape[1:]))
    made = {"successes": 0}

    def grpc_infer(tensor_data=data, class_count=0, **kwargs):
        tensor = grpcclient.InferInput(input_meta["name"], list(tensor_data.shape), "FP32")
        tensor.set_data_from_numpy(tensor_data)
        wanted = grpcclient.InferRequestedOutput(out_name, class_count=class_count)
        result = client.infer(model, [tensor], outputs=[wanted], request_id="grpc-1", **kwargs)
        made["successes"] += 1
        return result

    def http_infer(tensor_data=data, class_count=0, **kwargs):
        tensor = httpclient.InferInput(input_meta["name"], list(tensor_data.shape), "FP32")
        tensor.set_data_from_numpy(tensor_data, binary_data=True)
        wanted = httpclient.InferRequestedOutput(out_name, binary_data=True, class_count=class_count)
        return http.infer(model, [tensor], outputs=[wanted], **kwargs)

    result = grpc_infer()
    values = result.as_numpy(out_name)
    check(values is not None and list(values.shape) == out_shape, f"raw infer output shape {out_shape}")
    check(values.dtype == np.float32 and np.all(np.isfinite(values)), "raw infer output is finite FP32")
    response = result.get_response(as_json=True)
    check(response.get("id") == "grpc-1", "response echoes the request id")
    check("mica_engine" in response.get("parameters", {}), "response says where it ran (mica_engine)")
    if args.deterministic:
        check(np.array_equal(values, http_infer().as_numpy(out_name)), "gRPC and HTTP answers to the same request are equal")

    # Typed contents, through the client package's own generated stub.
    channel = grpc.insecure_channel(args.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
    tensor = request.inputs.add(name=input_meta["name"], datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(data.flatten().tolist())
    typed = stub.ModelInfer(request)
    made["successes"] += 1
    typed_values = np.frombuffer(typed.raw_output_contents[0], dtype=np.float32).reshape(out_shape)
    check(typed.id == "typed-1" and list(typed.outputs[0].shape) == out_shape, "typed-contents infer output shape")
    if args.deterministic:
        check(np.array_equal(typed_values, values), "typed and raw inputs give equal answers")
    try:
        bad = service_pb2.ModelInferRequest(model_name=model)
        bad.inputs.add(name=input_meta["name"], datatype="FP32", shape=shape).contents.int_contents.extend([1] * int(np.prod(shape)))
        stub.ModelInfer(bad)
        check(False, "FP32 values in int_contents are refused")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT and "fp32_contents" in error.details(), "FP32 values in int_contents are INVALID_ARGUMENT naming fp32_contents")
    channel.close()

    top = min(3, classes)
    classified = grpc_infer(class_count=top).as_numpy(out_name)
    check(list(classified.shape) == [batch, top], f"classification shape [{batch}, {top}]")
    scores = [[float(e.decode().split(":")[0]) for e in row] for row in classified]
    check(all(row == sorted(row, reverse=True) for row in scores), "classification scores descend")
    if args.deterministic:
        http_classified = http_infer(class_count=top).as_numpy(out_name)
        check(classified.tolist() == http_classified.tolist(), "gRPC and HTTP classification strings are equal")

    check(list(grpc_infer(priority=1, timeout=10_000_000).as_numpy(out_name).shape) == out_shape, "priority 1 and a 10 s timeout are accepted")

    # Streaming: several requests on one stream, each answered with its id.
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    streamed = 5
    for i in range(streamed):
        tensor = grpcclient.InferInput(input_meta["name"], shape, "FP32")
        tensor.set_data_from_numpy(data)
        client.async_stream_infer(model, [tensor], request_id=f"stream-{i}")
    got = [answers.get(timeout=30) for _ in range(streamed)]
    client.stop_stream()
    made["successes"] += streamed
    check(all(error is None for _, error in got), f"{streamed} streamed requests answered without error")
    ids = sorted(result.get_response().id for result, _ in got if result is not None)
    check(ids == sorted(f"stream-{i}" for i in range(streamed)), "streamed answers carry their ids")
    check(all(list(r.as_numpy(out_name).shape) == out_shape for r, _ in got if r is not None), "streamed answers have the output shape")
    # A bad request on a stream is answered with its error and the stream goes on.
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    wrong = grpcclient.InferInput(input_meta["name"], [1, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros([1, 1], dtype=np.float32))
    client.async_stream_infer(model, [wrong], request_id="stream-bad")
    good = grpcclient.InferInput(input_meta["name"], shape, "FP32")
    good.set_data_from_numpy(data)
    client.async_stream_infer(model, [good], request_id="stream-good")
    first, second = answers.get(timeout=30), answers.get(timeout=30)
    client.stop_stream()
    made["successes"] += 1
    check(first[0] is None and first[1] is not None and "shape" in first[1].message(), "a bad streamed request is answered with its error")
    check(second[1] is None and second[0] is not None, "the stream goes on after an error")

    # Bad inputs: each class with its code, and the same text as over HTTP.
    def both(name, grpc_call, http_call, want_code, needle):
        error, http_error = refused(grpc_call), refused(http_call)
        check(
            error is not None and code(error) == want_code and needle in error.message(),
            f"{name}: {want_code} naming {needle!r} (got {code(error)})",
        )
        check(
            error is not None and http_error is not None and error.message() == http_error.message(),
            f"{name}: same message over HTTP",
        )

    zeros = np.zeros([1, 1], dtype=np.float32)
    both("wrong shape", lambda: grpc_infer(zeros), lambda: http_infer(zeros), "StatusCode.INVALID_ARGUMENT", "shape")
    too_many = np.zeros([max_batch + 1] + shape[1:], dtype=np.float32)
    both("batch over max_batch_size", lambda: grpc_infer(too_many), lambda: http_infer(too_many), "StatusCode.INVALID_ARGUMENT", "max_batch_size")
    levels = int(config["dynamic_batching"]["priority_levels"])
    both(
        "priority past the levels",
        lambda: grpc_infer(priority=levels + 1),
        lambda: http_infer(priority=levels + 1),
        "StatusCode.INVALID_ARGUMENT",
        "parameters.priority",
    )

    def wrong_type(module, infer_client, **kwargs):
        tensor = module.InferInput(input_meta["name"], shape, "INT32")
        tensor.set_data_from_numpy(np.zeros(shape, dtype=np.int32), **kwargs)
        return infer_client.infer(model, [tensor])

    both("wrong datatype", lambda: wrong_type(grpcclient, client), lambda: wrong_type(httpclient, http, binary_data=True), "StatusCode.INVALID_ARGUMENT", "datatype")

    def unknown_input(module, infer_client, **kwargs):
        tensor = module.InferInput("no_such_input", shape, "FP32")
        tensor.set_data_from_numpy(data, **kwargs)
        return infer_client.infer(model, [tensor])

    both("unknown input", lambda: unknown_input(grpcclient, client), lambda: unknown_input(httpclient, http, binary_data=True), "StatusCode.INVALID_ARGUMENT", "no_such_input")

    def unknown_model(module, infer_client, version="", **kwargs):
        tensor = module.InferInput(input_meta["name"], shape, "FP32")
        tensor.set_data_from_numpy(data, **kwargs)
        return infer_client.infer("no-such-model" if not version else model, [tensor], model_version=version)

    both("unknown model", lambda: unknown_model(grpcclient, client), lambda: unknown_model(httpclient, http, binary_data=True), "StatusCode.NOT_FOUND", "no-such-model")
    both("unknown version", lambda: unknown_model(grpcclient, client, "999"), lambda: unknown_model(httpclient, http, "999", binary_data=True), "StatusCode.NOT_FOUND", "999")
    both(
        "unknown model metadata",
        lambda: client.get_model_metadata("no-such-model"),
        lambda: http.get_model_metadata("no-such-model"),
        "StatusCode.NOT_FOUND",
        "no-such-model",
    )
    error = refused(lambda: grpc_infer(timeout=1))
    check(code(error) == "StatusCode.DEADLINE_EXCEEDED" and "timed out" in (error.message() or ""), f"a 1 µs timeout is DEADLINE_EXCEEDED (got {code(error)})")
    error = refused(lambda: client.get_system_shared_memory_status())
    check(code(error) == "StatusCode.UNIMPLEMENTED" and "shared memory" in (error.message() or ""), f"shared memory is UNIMPLEMENTED (got {code(error)})")
    error = refused(lambda: client.load_model(model))
    check(code(error) == "StatusCode.UNIMPLEMENTED", f"repository load is UNIMPLEMENTED (got {code(error)})")

    check(client.is_server_live() and client.is_server_ready(), "server live and ready after the bad requests")
    check(list(grpc_infer().as_numpy(out_name).shape) == out_shape, "inference still works after the bad requests")

    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    successes = int(stats["inference_stats"]["success"].get("count", 0))
    check(stats["name"] == model and successes >= made["successes"], f"statistics count {successes} successes (this check made {made['successes']} over gRPC)")
    check(int(stats["inference_stats"]["fail"].get("count", 0)) >= 1, "statistics count the failures")
    http_stats = http.get_inference_statistics(model)["model_stats"][0]
    check(int(http_stats["inference_stats"]["success"]["count"]) >= successes, "HTTP statistics count the gRPC requests too")

    client.close()
    http.close()
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
