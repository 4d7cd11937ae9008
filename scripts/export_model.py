#!/usr/bin/env python3
"""Exports the models mica's torch engine runs.

ResNet-50 (default): torchvision's ResNet-50, with weights from a local file
(`--weights`, a state_dict saved by torch.save) or random (seeded) otherwise, as
  resnet50_fp32.pt   TorchScript, FP32, NCHW             (cpu, cuda_fp32, cuda_tf32, amp)
  resnet50_fp16.pt   TorchScript wrapper: FP16 weights in channels-last; its forward takes
                     FP32 NCHW input, converts it itself and returns FP32   (tensor_fp16)
  resnet50_bf16.pt   the same in BF16                                       (tensor_bf16)
  resnet50.onnx      ONNX, FP32, dynamic batch
  resnet50_{fp32,fp16,bf16}_fused.pt
                     the same three with every batch norm folded into its convolution
                     (torch.fx fuse, in FP32, before any conversion) and frozen
                     (torch.jit.freeze: weights become constants): fewer kernels and
                     fewer bytes moved per image; what config/gpu.toml runs
and, with `--reference N`, an input batch of N images and PyTorch's FP32 output for it
(same format as the test fixture below), for numerical agreement checks.

Tiny model (`--tiny`): a small ResNet-style network (conv/bn/relu, two residual
blocks, pooling, fc; input 3x32x32, 10 classes) with random weights and non-trivial
batch-norm statistics, as TorchScript, plus an input batch and its expected output,
written to engines/tests/fixtures/ (well under 1 MB) for the engine's CPU tests.

Staged models (`--stages`): the network as a sequence of blocks, each a TorchScript
file `block_<i>.pt` taking a flat (batch, elements) FP32 input and returning a flat
output, plus `manifest.json` (block names, files, input/output shapes) — ResNet-50 in
18 blocks (stem, 16 bottlenecks, head) into `--out`/resnet50_stages/, and the tiny
model in 4 blocks (stem, layer1, layer2, head; same weights as tiny_resnet.pt) into
the fixtures folder's tiny_stages/ with the unsplit model's input and output, so that
a pipeline run stage by stage can be checked against the unsplit model.

AOTInductor packages (`--aoti SPEC[,SPEC...]`, needs a GPU for CUDA packages and a C++
compiler): ResNet-50 (or the tiny model with `--tiny`) compiled ahead of time by
torch._inductor.aoti_compile_and_package into `.pt2` packages the torch engine loads
(`model = "....pt2"`). SPEC is `<precision>:<device>:<batch>[:<mode>[:<input>]]`,
precision fp16, bf16 or fp32, device cuda or cpu, batch a number (a package for that
batch size only: mica pads every batch to it) or `dyn<N>` (a dynamic batch dimension
1..N), mode `default` or `max-autotune` (Inductor's max_autotune, no CUDA graphs), input
`fp32` (the default: FP32 NCHW in, like the TorchScript wrappers, the conversion compiled
in as the first kernel) or `cl` (the input already in the package's precision and in
channels-last layout, what PyTorch's own half-precision benchmarks feed: mica converts a
request's FP32 data on the GPU, and its synthetic benchmark input is made in that form).
Files: `resnet50_<precision>_<device>_b<batch>[_<mode>][_cl].pt2` (tiny:
`tiny_<device>_...pt2`), each with metadata mica checks at load (mica_input_dtype,
mica_input_layout, mica_compute, mica_batch, mica_max_batch). Every package returns
FP32.

ONNX (`--onnx`, for the onnx engine): the committed tiny model's weights (loaded from
tiny_resnet.pt, so no weight changes) as `tiny_resnet.onnx` with a dynamic batch axis
(CPU and CUDA providers; TensorRT builds an optimization profile over it) and as
`tiny_resnet_b4.onnx` with a fixed batch of 4 (what a DLA engine needs: static shapes,
mica pads a smaller batch to 4), plus `tiny_stages/block_<i>.onnx` (flat in and out,
dynamic batch) for ONNX pipelines; and, with onnxruntime installed, ONNX Runtime's own
output on the fixture input (`tiny_onnx_expected.bin`, described in `tiny_onnx.json`) with
its largest difference from PyTorch's. Without `--tiny`: ResNet-50 as `resnet50.onnx`
(dynamic batch) and `resnet50_b<N>.onnx` for every N in `--onnx-batches` (fixed batch, DLA).

Tensors are written as raw little-endian float32 (`.bin`, row-major) described by a
JSON file with their shapes, so Rust reads them without extra dependencies.

Needs torch (2.11.0, the libtorch version tch 0.24 binds) and torchvision; ONNX export
also needs onnx (and onnxscript for the dynamo exporter).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch
from torch import nn

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "engines" / "tests" / "fixtures"
SEED = 20261123


# --------------------------------------------------------------------------- wrappers


class Fp16ChannelsLast(nn.Module):
    """FP16 weights in channels-last; FP32 NCHW in, FP32 out (tensor_fp16 units)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half().to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.half().contiguous(memory_format=torch.channels_last)
        return self.model(x).float()


class Bf16ChannelsLast(nn.Module):
    """BF16 weights in channels-last; FP32 NCHW in, FP32 out (tensor_bf16 units)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(torch.bfloat16).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        return self.model(x).float()


class ChannelsLastInput(nn.Module):
    """Weights in `dtype` and channels-last; input already in `dtype` and channels-last
    (an `--aoti ...:cl` package), FP32 out."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model.to(dtype).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


# ------------------------------------------------------------------------- tiny model


class Block(nn.Module):
    """A basic residual block (two 3x3 convs), with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.project = None
        if stride != 1 or cin != cout:
            self.project = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.project is None else self.project(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """conv-bn-relu stem, two residual blocks (the second downsamples), pool, fc."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        )
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Gives every batch norm non-trivial statistics and affine parameters, so that a
    wrong eval/train mode or a skipped layer shows in the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


# ---------------------------------------------------------------------------- writing


def write_f32(path: pathlib.Path, tensor: torch.Tensor) -> None:
    """Raw little-endian float32, row-major."""
    array = tensor.detach().to(torch.float32).contiguous().cpu().numpy()
    path.write_bytes(array.astype("<f4", copy=False).tobytes())


def write_reference(
    out: pathlib.Path,
    name: str,
    model_file: str,
    module: torch.jit.ScriptModule,
    inputs: torch.Tensor,
    extra: dict | None = None,
) -> None:
    """Writes `<name>_input.bin`, `<name>_expected.bin` and `<name>.json`."""
    with torch.no_grad():
        expected = module(inputs)
    input_file, expected_file = f"{name}_input.bin", f"{name}_expected.bin"
    write_f32(out / input_file, inputs)
    write_f32(out / expected_file, expected)
    description = {
        "format": "mica-tensors-v1: raw little-endian float32, row-major",
        "model": model_file,
        "input": {"file": input_file, "shape": list(inputs.shape)},
        "expected": {"file": expected_file, "shape": list(expected.shape)},
        "torch_version": torch.__version__,
        "seed": SEED,
    }
    description.update(extra or {})
    (out / f"{name}.json").write_text(json.dumps(description, indent=2) + "\n")
    print(f"wrote {out / (name + '.json')} (+ {input_file}, {expected_file})")


def save_script(module: nn.Module, path: pathlib.Path) -> torch.jit.ScriptModule:
    scripted = torch.jit.script(module.eval())
    scripted.save(str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return scripted


# ---------------------------------------------------------------------------- exports


def export_tiny(out: pathlib.Path, batch: int) -> None:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = TinyResNet()
    randomize_batchnorm(model, generator)
    scripted = save_script(model, out / "tiny_resnet.pt")
    inputs = torch.randn(batch, 3, 32, 32, generator=generator)
    write_reference(out, "tiny", "tiny_resnet.pt", scripted, inputs, {"classes": 10})


class FlatBlock(nn.Module):
    """One block of a staged model: flat (batch, elements) in, flat out."""

    def __init__(self, block: nn.Module, in_shape: list[int]) -> None:
        super().__init__()
        self.block = block
        self.in_shape = in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape([x.shape[0]] + self.in_shape)
        return torch.flatten(self.block(x), 1)


class Head(nn.Module):
    """Global average pooling and the classifier."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def export_blocks(blocks: list[tuple[str, nn.Module]], image: list[int], out: pathlib.Path,
                  model: str) -> None:
    """Writes block_<i>.pt per block and manifest.json (shapes traced with one image)."""
    out.mkdir(parents=True, exist_ok=True)
    x = torch.zeros([1] + image)
    entries = []
    for index, (name, block) in enumerate(blocks):
        block.eval()
        in_shape = list(x.shape[1:])
        with torch.no_grad():
            y = block(x)
        save_script(FlatBlock(block, in_shape), out / f"block_{index}.pt")
        entries.append({"index": index, "name": name, "file": f"block_{index}.pt",
                        "input_shape": in_shape, "output_shape": list(y.shape[1:])})
        x = y
    manifest = {"format": "mica-stages-v1: flat (batch, elements) FP32 in and out",
                "model": model, "blocks": entries, "torch_version": torch.__version__}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out / 'manifest.json'} ({len(entries)} blocks)")


def resnet50_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    blocks = [("stem", stem)]
    for layer in range(1, 5):
        for index, block in enumerate(getattr(model, f"layer{layer}")):
            blocks.append((f"layer{layer}.{index}", block))
    blocks.append(("head", Head(model.fc)))
    return blocks


def export_tiny_stages(out: pathlib.Path, batch: int) -> None:
    """The tiny model (same seed, same weights as export_tiny) in 4 blocks."""
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = TinyResNet()
    randomize_batchnorm(model, generator)
    model.eval()
    inputs = torch.randn(batch, 3, 32, 32, generator=generator)
    blocks = [("stem", model.stem), ("layer1", model.layer1), ("layer2", model.layer2),
              ("head", Head(model.fc))]
    stages = out / "tiny_stages"
    export_blocks(blocks, [3, 32, 32], stages, "tiny_resnet")
    scripted = torch.jit.script(model)
    write_reference(stages, "tiny", "block_0.pt", scripted, inputs, {"classes": 10})


def export_onnx(model: nn.Module, path: pathlib.Path, example_shape: list[int] | None = None,
                dynamic_batch: bool = True) -> None:
    """ONNX, opset 17, input `input`, output `logits`; a dynamic batch axis unless
    `dynamic_batch` is false (then the example's batch is the model's only batch)."""
    example = torch.randn(example_shape or [2, 3, 224, 224])
    dynamic_axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )
    except Exception as legacy_error:  # the TorchScript-based exporter may be gone
        print(f"legacy ONNX exporter failed ({legacy_error}); trying the dynamo exporter")
        shapes = None
        if dynamic_batch:
            shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=shapes,
            dynamo=True,
        )
        program.save(str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def committed_tiny(fixtures: pathlib.Path) -> nn.Module:
    """The tiny model with the weights of the committed tiny_resnet.pt (an eager module,
    so every exporter takes it)."""
    model = TinyResNet()
    scripted = torch.jit.load(str(fixtures / "tiny_resnet.pt"), map_location="cpu")
    model.load_state_dict(scripted.state_dict())
    return model.eval()


def read_f32(path: pathlib.Path, shape: list[int]) -> torch.Tensor:
    import numpy

    return torch.from_numpy(numpy.fromfile(str(path), dtype="<f4").reshape(shape).copy())


def export_tiny_onnx(fixtures: pathlib.Path) -> None:
    """tiny_resnet.onnx (dynamic batch), tiny_resnet_b4.onnx (fixed batch 4) and
    tiny_stages/block_<i>.onnx, all on the committed weights, checked against the
    committed PyTorch output, with ONNX Runtime's own output when onnxruntime is here."""
    description = json.loads((fixtures / "tiny.json").read_text())
    inputs = read_f32(fixtures / description["input"]["file"], description["input"]["shape"])
    expected = read_f32(fixtures / description["expected"]["file"],
                        description["expected"]["shape"])
    model = committed_tiny(fixtures)
    with torch.no_grad():
        eager = model(inputs)
    drift = (eager - expected).abs().max().item()
    if drift > 1e-5:
        raise SystemExit(f"the rebuilt tiny model differs from tiny_expected.bin by {drift}")
    batch = int(inputs.shape[0])
    export_onnx(model, fixtures / "tiny_resnet.onnx", [2, 3, 32, 32])
    export_onnx(model, fixtures / f"tiny_resnet_b{batch}.onnx", [batch, 3, 32, 32],
                dynamic_batch=False)

    stages = fixtures / "tiny_stages"
    blocks = [("stem", model.stem), ("layer1", model.layer1), ("layer2", model.layer2),
              ("head", Head(model.fc))]
    x = torch.zeros(1, 3, 32, 32)
    for index, (_, block) in enumerate(blocks):
        in_shape = list(x.shape[1:])
        with torch.no_grad():
            y = block(x)
        flat = FlatBlock(block, in_shape).eval()
        export_onnx(flat, stages / f"block_{index}.onnx", [2, int(torch.tensor(in_shape).prod())])
        x = y

    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: no ONNX Runtime reference output written")
        return
    session = onnxruntime.InferenceSession(str(fixtures / "tiny_resnet.onnx"),
                                           providers=["CPUExecutionProvider"])
    output = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])
    relative = ((output - expected).abs().max() / expected.abs().max()).item()
    write_f32(fixtures / "tiny_onnx_expected.bin", output)
    onnx_description = {
        "format": description["format"],
        "model": "tiny_resnet.onnx",
        "input": description["input"],
        "expected": {"file": "tiny_onnx_expected.bin", "shape": list(output.shape)},
        "onnxruntime_version": onnxruntime.__version__,
        "provider": "CPUExecutionProvider",
        "max_relative_difference_from_torch": relative,
        "torch_version": torch.__version__,
    }
    (fixtures / "tiny_onnx.json").write_text(json.dumps(onnx_description, indent=2) + "\n")
    print(f"onnxruntime {onnxruntime.__version__}: largest difference from PyTorch "
          f"{relative:.2e} of the largest output")


def export_resnet50(out: pathlib.Path, weights: pathlib.Path | None, reference: int,
                    onnx_batches: list[int] | None = None) -> None:
    import torchvision  # only needed here

    torch.manual_seed(SEED)
    model = torchvision.models.resnet50(weights=None)
    if weights is not None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
        print(f"loaded weights from {weights}")
    else:
        print("no --weights: random weights (seeded); outputs are not meaningful classes")
    model.eval()

    fp32 = save_script(model, out / "resnet50_fp32.pt")
    # The wrappers convert their own copy of the weights.
    save_script(Fp16ChannelsLast(copy_model(model)), out / "resnet50_fp16.pt")
    save_script(Bf16ChannelsLast(copy_model(model)), out / "resnet50_bf16.pt")
    fused = fuse_batchnorm(model)
    save_frozen(fused, out / "resnet50_fp32_fused.pt")
    save_frozen(Fp16ChannelsLast(copy_model(fused)), out / "resnet50_fp16_fused.pt")
    save_frozen(Bf16ChannelsLast(copy_model(fused)), out / "resnet50_bf16_fused.pt")
    try:
        export_onnx(copy_model(model), out / "resnet50.onnx")
        for batch in onnx_batches or []:
            export_onnx(copy_model(model), out / f"resnet50_b{batch}.onnx", [batch, 3, 224, 224],
                        dynamic_batch=False)
    except Exception as error:  # ONNX is optional for the torch engine
        print(f"warning: ONNX export failed: {error}", file=sys.stderr)
    if reference > 0:
        generator = torch.Generator().manual_seed(SEED)
        inputs = torch.randn(reference, 3, 224, 224, generator=generator)
        write_reference(out, "resnet50", "resnet50_fp32.pt", fp32, inputs, {"classes": 1000})


def export_resnet50_onnx(out: pathlib.Path, weights: pathlib.Path | None,
                         batches: list[int]) -> None:
    """Only the ONNX files of ResNet-50: resnet50.onnx (dynamic batch) and
    resnet50_b<N>.onnx per fixed batch N (the same seeded or loaded weights)."""
    import torchvision  # only needed here

    torch.manual_seed(SEED)
    model = torchvision.models.resnet50(weights=None)
    if weights is not None:
        model.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    model.eval()
    export_onnx(copy_model(model), out / "resnet50.onnx")
    for batch in batches:
        export_onnx(copy_model(model), out / f"resnet50_b{batch}.onnx", [batch, 3, 224, 224],
                    dynamic_batch=False)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode model with every conv -> batch norm pair folded into one
    convolution (FP32 arithmetic), through torch.fx."""
    from torch.fx.experimental.optimization import fuse

    fused = fuse(copy_model(model)).eval()
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    if left:
        raise RuntimeError(f"{left} batch norms were not folded")
    return fused


def save_frozen(module: nn.Module, path: pathlib.Path) -> None:
    """Scripts, freezes (parameters become constants, frozen-graph optimizations run)
    and saves."""
    frozen = torch.jit.freeze(torch.jit.script(module.eval()))
    frozen.save(str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, frozen)")


# ----------------------------------------------------------------- AOTInductor packages


class Fp32Nchw(nn.Module):
    """FP32 weights, FP32 NCHW in and out (fp32 packages)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def parse_aoti_spec(spec: str) -> dict:
    """`<precision>:<device>:<batch>[:<mode>[:<input>]]` -> its parts (see the module
    doc)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4, 5):
        raise ValueError(
            f"--aoti {spec!r}: expected <precision>:<device>:<batch>[:<mode>[:<input>]]")
    precision, device, batch = parts[:3]
    mode = parts[3] if len(parts) >= 4 else "default"
    input_form = parts[4] if len(parts) == 5 else "fp32"
    if input_form not in ("fp32", "cl"):
        raise ValueError(f"--aoti {spec!r}: input must be fp32 or cl")
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"--aoti {spec!r}: precision must be fp32, fp16 or bf16")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"--aoti {spec!r}: device must be cuda or cpu")
    if mode not in ("default", "max-autotune"):
        raise ValueError(f"--aoti {spec!r}: mode must be default or max-autotune")
    dynamic = batch.startswith("dyn")
    number = int(batch[3:] if dynamic else batch)
    if number < 1:
        raise ValueError(f"--aoti {spec!r}: batch must be at least 1")
    return {"precision": precision, "device": device, "batch": number, "dynamic": dynamic,
            "mode": mode, "input": input_form}


def export_aoti(model: nn.Module, name: str, image: list[int], spec: dict,
                out: pathlib.Path) -> pathlib.Path:
    """Compiles `model` (FP32, eval) for one package spec and writes the package."""
    import time

    precision, device = spec["precision"], spec["device"]
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    channels_last = spec["input"] == "cl"
    if channels_last:
        module = ChannelsLastInput(copy_model(model), dtype).to(device).eval()
    else:
        wrapper = {"fp32": Fp32Nchw, "fp16": Fp16ChannelsLast,
                   "bf16": Bf16ChannelsLast}[precision]
        module = wrapper(copy_model(model)).to(device).eval()
    batch = spec["batch"]
    example_batch = min(batch, 64) if spec["dynamic"] else batch
    # A dynamic dimension needs an example above 1 (torch.export specializes size 1).
    example = torch.randn([max(example_batch, 2) if spec["dynamic"] else batch] + image,
                          device=device)
    if channels_last:
        # Inductor compiles for the example's strides: the package then assumes them.
        example = example.to(dtype).contiguous(memory_format=torch.channels_last)
    dynamic_shapes = None
    if spec["dynamic"]:
        dynamic_shapes = {"x": {0: torch.export.Dim("batch", min=1, max=batch)}}
    compute = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    tag = f"b{batch}" if not spec["dynamic"] else f"dyn{batch}"
    suffix = "" if spec["mode"] == "default" else "_" + spec["mode"].replace("-", "")
    if channels_last:
        suffix += "_cl"
    path = out / f"{name}_{precision}_{device}_{tag}{suffix}.pt2"
    configs = {
        "aot_inductor.metadata": {
            "mica_input_dtype": str(dtype).removeprefix("torch.") if channels_last else "float32",
            "mica_input_layout": "channels_last" if channels_last else "contiguous",
            "mica_compute": compute,
            "mica_batch": "dynamic" if spec["dynamic"] else str(batch),
            "mica_max_batch": str(batch),
        },
    }
    if spec["mode"] == "max-autotune":
        configs["max_autotune"] = True
        configs["triton.cudagraphs"] = False
    started = time.time()
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs=configs)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {time.time() - started:.0f} s, "
          f"{spec['mode']})")
    return path


def export_aoti_packages(specs: list[str], out: pathlib.Path, tiny: bool,
                         weights: pathlib.Path | None) -> None:
    parsed = [parse_aoti_spec(s) for s in specs]
    out.mkdir(parents=True, exist_ok=True)
    if tiny:
        torch.manual_seed(SEED)
        generator = torch.Generator().manual_seed(SEED)
        model = TinyResNet()
        randomize_batchnorm(model, generator)
        name, image = "tiny", [3, 32, 32]
    else:
        import torchvision  # only needed here

        torch.manual_seed(SEED)
        model = torchvision.models.resnet50(weights=None)
        if weights is not None:
            model.load_state_dict(torch.load(str(weights), map_location="cpu",
                                             weights_only=True))
        name, image = "resnet50", [3, 224, 224]
    model.eval()
    for spec in parsed:
        export_aoti(model, name, image, spec, out)


def copy_model(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "models",
                        help="folder for the ResNet-50 files (default: models/)")
    parser.add_argument("--weights", type=pathlib.Path,
                        help="a local ResNet-50 state_dict (.pth); random weights without it")
    parser.add_argument("--reference", type=int, default=0, metavar="N",
                        help="also write an N-image input and its FP32 output for ResNet-50")
    parser.add_argument("--tiny", action="store_true",
                        help="export only the tiny test model and its expected output")
    parser.add_argument("--fixtures", type=pathlib.Path, default=FIXTURES,
                        help="folder for the tiny model (default: engines/tests/fixtures/)")
    parser.add_argument("--tiny-batch", type=int, default=4)
    parser.add_argument("--stages", action="store_true",
                        help="export staged models (per-block TorchScript + manifest.json): "
                             "the tiny one into the fixtures folder, ResNet-50 into --out")
    parser.add_argument("--aoti", metavar="SPEC[,SPEC...]",
                        help="export only AOTInductor packages, e.g. fp16:cuda:64:max-autotune,"
                             "fp16:cuda:dyn256 (see above); with --tiny, of the tiny model "
                             "into --out")
    parser.add_argument("--onnx", action="store_true",
                        help="only ONNX files: with --tiny, the tiny model's (from the committed "
                             "weights) and ONNX Runtime's output on them; else ResNet-50's")
    parser.add_argument("--onnx-batches", default="", metavar="N[,N...]",
                        help="also export ResNet-50 ONNX files with these fixed batch sizes "
                             "(DLA engines need static shapes), e.g. 1,8")
    args = parser.parse_args()
    try:
        onnx_batches = [int(b) for b in args.onnx_batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--onnx-batches {args.onnx_batches!r} is not a list of numbers")
    if any(b < 1 for b in onnx_batches):
        parser.error("--onnx-batches must be positive")

    torch.set_grad_enabled(False)
    if args.onnx and args.tiny:
        export_tiny_onnx(args.fixtures)
        return 0
    if args.onnx:
        args.out.mkdir(parents=True, exist_ok=True)
        export_resnet50_onnx(args.out, args.weights, onnx_batches)
        return 0
    if args.aoti:
        export_aoti_packages(args.aoti.split(","), args.out, args.tiny, args.weights)
        return 0
    if args.stages:
        export_tiny_stages(args.fixtures, args.tiny_batch)
        if args.tiny:
            return 0
        import torchvision  # only needed here

        torch.manual_seed(SEED)
        model = torchvision.models.resnet50(weights=None)
        if args.weights is not None:
            model.load_state_dict(torch.load(str(args.weights), map_location="cpu",
                                             weights_only=True))
        export_blocks(resnet50_blocks(model.eval()), [3, 224, 224],
                      args.out / "resnet50_stages", "resnet50")
        return 0
    if args.tiny:
        args.fixtures.mkdir(parents=True, exist_ok=True)
        export_tiny(args.fixtures, args.tiny_batch)
        return 0
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} is not a file")
    args.out.mkdir(parents=True, exist_ok=True)
    export_resnet50(args.out, args.weights, args.reference, onnx_batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
