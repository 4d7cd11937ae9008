#!/usr/bin/env python3
"""Collects one scripts/device-bench.sh run into results.json and summary.md.

Reads the run's work folder (mica bench / profile JSON with the command of each, the
PyTorch reference, the agreement test's output, nvidia-smi) and writes:
  <out>/results.json  every figure, each with the command that produced it
  <out>/summary.md    the tables (mica / PyTorch ratios) and the issue's targets
and prints summary.md. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

SIZES = [1, 8, 32, 64, 128, 256]
# mica unit -> the PyTorch configuration that does the same arithmetic.
COUNTERPART = {
    "cuda_fp32": "eager_fp32_notf32",
    "cuda_tf32": "eager_fp32_tf32",
    "amp": "autocast_fp16",
    "tensor_fp16": "half_cl",
    "tensor_fp16_1s": "half_cl",
}
EAGER = ["eager_fp32_notf32", "eager_fp32_tf32", "autocast_fp16", "half_cl"]
POLICIES = ["round_robin", "least_loaded", "contention_aware", "adaptive"]
COMBOS = ["cuda_fp32+tensor_fp16", "cpu+cuda_fp32+tensor_fp16"]


def read_runs(work: pathlib.Path) -> dict:
    runs = {}
    for cmd in sorted((work / "runs").glob("*.cmd")):
        name = cmd.stem
        entry = {"command": cmd.read_text().strip()}
        rc = work / "runs" / f"{name}.rc"
        if rc.is_file():
            code, wall = rc.read_text().split()
            entry["exit_code"], entry["wall_s"] = int(code), float(wall)
        try:
            entry["report"] = json.loads((work / "runs" / f"{name}.json").read_text())
        except (OSError, ValueError):
            err = work / "runs" / f"{name}.err"
            entry["error"] = err.read_text()[-2000:] if err.is_file() else "no output"
        runs[name] = entry
    return runs


def throughput(runs: dict, name: str) -> float | None:
    report = runs.get(name, {}).get("report")
    if not report or not report["total"]["images"]:
        return None
    return report["total"]["throughput_img_s"]


def p50(runs: dict, name: str) -> float | None:
    report = runs.get(name, {}).get("report")
    return report["total"]["p50_ms"] if report else None


def agreement(work: pathlib.Path) -> dict:
    path = work / "agreement.txt"
    if not path.is_file():
        return {"ran": False}
    text = path.read_text()
    rows = []
    for m in re.finditer(r"agreement (\S+)\s+(\S+)\s+relative error (\S+) \(limit (\S+)\)", text):
        kind, file, error, limit = m.groups()
        rows.append({"unit_kind": kind, "model": file, "relative_error": float(error),
                     "limit": float(limit), "pass": float(error) < float(limit)})
    passed = "test result: ok" in text
    return {"ran": True, "passed": passed, "checks": rows, "output_tail": text[-3000:]}


def fmt(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--mode", default="full")
    parser.add_argument("--elapsed", type=float, default=0.0)
    args = parser.parse_args()
    work = args.work

    runs = read_runs(work)
    ref_path = work / "torch_reference.json"
    ref = json.loads(ref_path.read_text()) if ref_path.is_file() else {"configs": {}}
    cfgs = ref.get("configs", {})
    gpu = (work / "gpu.txt").read_text().strip() if (work / "gpu.txt").is_file() else "?"
    torch_line = (work / "torch.txt").read_text().strip() if (work / "torch.txt").is_file() else "?"
    agree = agreement(work)
    profiles = {}
    for toml in sorted((work / "profiles").glob("*.toml")):
        profiles[toml.stem] = toml.read_text()

    def ref_rate(config, batch):
        return cfgs.get(config, {}).get("throughput_img_s", {}).get(str(batch))

    def best_eager(batch):
        rates = [(ref_rate(c, batch), c) for c in EAGER if ref_rate(c, batch) is not None]
        return max(rates) if rates else (None, None)

    md = []
    md.append(f"# mica on {gpu.split(',')[0]} — device run ({args.mode})\n")
    md.append(f"GPU: `{gpu}`; {torch_line}. Script: `scripts/device-bench.sh {args.mode}`, "
              f"{args.elapsed:.0f} s. Every mica figure is `mica bench` through the whole "
              "service path (dispatcher, policy, unit actors, stream workers, torch engine; "
              "synthetic input on the GPU, `--batch-size N`: every request carries N images "
              "and is one batch); every PyTorch figure is `scripts/torch_reference.py` in the "
              "same call. Commands per figure: results.json.\n")

    # Single units vs PyTorch.
    md.append("## Each unit alone: mica img/s, PyTorch img/s, ratio\n")
    md.append("| unit (streams) | PyTorch counterpart | " + " | ".join(f"bs {b}" for b in SIZES) + " |")
    md.append("|---|---|" + "---|" * len(SIZES))
    single = {}
    for unit in ["tensor_fp16", "tensor_fp16_1s", "cuda_fp32", "cuda_tf32", "amp", "cpu"]:
        counterpart = COUNTERPART.get(unit)
        cells = []
        for b in SIZES:
            mica = throughput(runs, f"single-{unit}-b{b}")
            torch = ref_rate(counterpart, b) if counterpart else None
            single.setdefault(unit, {})[b] = {"mica_img_s": mica, "torch_img_s": torch,
                                              "ratio": ratio(mica, torch)}
            if mica is None:
                cells.append("—")
            elif torch is None:
                cells.append(f"{fmt(mica)}")
            else:
                cells.append(f"{fmt(mica)} / {fmt(torch)} = **{ratio(mica, torch):.2f}x**")
        if any(c != "—" for c in cells):
            md.append(f"| {unit} | {counterpart or '—'} | " + " | ".join(cells) + " |")
    md.append("")
    md.append("PyTorch reference, img/s (and batch-1 latency p50):\n")
    md.append("| configuration | " + " | ".join(f"bs {b}" for b in SIZES) + " | bs-1 p50 ms |")
    md.append("|---|" + "---|" * (len(SIZES) + 1))
    for name, entry in cfgs.items():
        row = " | ".join(fmt(entry["throughput_img_s"].get(str(b))) for b in SIZES)
        md.append(f"| {name} | {row} | {fmt(entry.get('batch1_latency_p50_ms'), 3)} |")
    md.append("")
    md.append("tensor_fp16 (mica, full path) against every PyTorch configuration:\n")
    md.append("| batch | mica | best eager (which) | ratio | half_cl_graph | ratio | "
              "script_half_cl (same model file, from Python) | ratio |")
    md.append("|---|---|---|---|---|---|---|---|")
    for b in SIZES:
        mica = throughput(runs, f"single-tensor_fp16-b{b}")
        best, which = best_eager(b)
        graph = ref_rate("half_cl_graph", b)
        script = ref_rate("script_half_cl", b)
        md.append(f"| {b} | {fmt(mica)} | {fmt(best)} ({which or '—'}) | "
                  f"{fmt(ratio(mica, best), 2)} | {fmt(graph)} | {fmt(ratio(mica, graph), 2)} | "
                  f"{fmt(script)} | {fmt(ratio(mica, script), 2)} |")
    md.append("")

    # Latency.
    md.append("## Batch-1 latency p50 (one request at a time)\n")
    md.append("| unit | mica p50 ms (full path) | PyTorch counterpart | PyTorch p50 ms | ratio |")
    md.append("|---|---|---|---|---|")
    latency = {}
    for unit in ["tensor_fp16", "cuda_fp32", "amp"]:
        mica = p50(runs, f"latency-{unit}-b1")
        counterpart = COUNTERPART[unit]
        torch = cfgs.get(counterpart, {}).get("batch1_latency_p50_ms")
        latency[unit] = {"mica_p50_ms": mica, "torch_p50_ms": torch, "torch": counterpart}
        md.append(f"| {unit} | {fmt(mica, 3)} | {counterpart} | {fmt(torch, 3)} | "
                  f"{fmt(ratio(mica, torch), 2)} |")
    md.append("")

    # Streams.
    md.append("## Streams on tensor_fp16\n")
    md.append("| batch | 1 stream img/s | 2 streams img/s | gain |")
    md.append("|---|---|---|---|")
    streams = {}
    for b in [64, 256]:
        one = throughput(runs, f"single-tensor_fp16_1s-b{b}")
        two = throughput(runs, f"single-tensor_fp16-b{b}")
        streams[b] = {"one": one, "two": two}
        md.append(f"| {b} | {fmt(one)} | {fmt(two)} | {fmt(ratio(two, one), 3)}x |")
    md.append("")

    # Combinations.
    md.append("## Combinations under each policy (img/s)\n")
    md.append("| units | batch | " + " | ".join(POLICIES) + " | best single unit | best policy / best single |")
    md.append("|---|---|" + "---|" * (len(POLICIES) + 2))
    combos = {}
    for combo in COMBOS:
        for b in [64, 256]:
            rates = {p: throughput(runs, f"combo-{combo}-b{b}-{p}") for p in POLICIES}
            singles = {u: throughput(runs, f"single-{u}-b{b}") for u in combo.split("+")}
            known = {u: r for u, r in singles.items() if r is not None}
            best_unit = max(known, key=known.get) if known else None
            best_single = known.get(best_unit) if best_unit else None
            measured = {p: r for p, r in rates.items() if r is not None}
            best_policy = max(measured, key=measured.get) if measured else None
            combos[f"{combo}@{b}"] = {"policies": rates, "singles": singles,
                                      "best_single_unit": best_unit,
                                      "best_policy": best_policy}
            cells = " | ".join(fmt(rates[p]) for p in POLICIES)
            r = ratio(measured.get(best_policy), best_single) if best_policy else None
            md.append(f"| {combo} | {b} | {cells} | {fmt(best_single)} ({best_unit or '—'}) | "
                      f"{fmt(r, 3)}x ({best_policy or '—'}) |")
    md.append("")

    # Agreement.
    md.append("## Numerical agreement (‖mica − PyTorch‖ / ‖PyTorch‖, 8 images)\n")
    if agree.get("checks"):
        md.append("| unit kind | model file | relative error | limit | |")
        md.append("|---|---|---|---|---|")
        for row in agree["checks"]:
            md.append(f"| {row['unit_kind']} | {row['model']} | {row['relative_error']:.3e} | "
                      f"{row['limit']:.0e} | {'ok' if row['pass'] else 'FAIL'} |")
    else:
        md.append("not run or no output; see results.json")
    md.append("")

    # Targets.
    md.append("## Targets (issue 4)\n")
    targets = []

    def target(name, ok, detail):
        targets.append({"target": name, "met": ok, "detail": detail})
        mark = "met" if ok else ("NOT met" if ok is False else "not measured")
        md.append(f"- **{mark}**: {name} — {detail}")

    m256 = throughput(runs, "single-tensor_fp16-b256")
    best256, which256 = best_eager(256)
    r = ratio(m256, best256)
    target("tensor_fp16 at batch 256 >= 1.0x PyTorch's best eager configuration",
           None if r is None else r >= 1.0,
           f"{fmt(m256)} vs {fmt(best256)} img/s ({which256}) = {fmt(r, 3)}x")
    lm, lt = latency["tensor_fp16"]["mica_p50_ms"], latency["tensor_fp16"]["torch_p50_ms"]
    target("tensor_fp16 batch-1 latency p50 <= PyTorch's (half_cl eager)",
           None if lm is None or lt is None else lm <= lt,
           f"{fmt(lm, 3)} ms vs {fmt(lt, 3)} ms")
    fp32 = [(b, single["cuda_fp32"][b]["ratio"]) for b in SIZES]
    known = [x for _, x in fp32 if x is not None]
    target("cuda_fp32 >= 1.0x PyTorch FP32 with TF32 off",
           None if not known else min(known) >= 1.0,
           ", ".join(f"bs {b}: {fmt(x, 3)}x" for b, x in fp32))
    s = streams[64]
    target("two streams beat one on tensor_fp16 at batch 64",
           None if s["one"] is None or s["two"] is None else s["two"] > s["one"],
           f"{fmt(s['two'])} vs {fmt(s['one'])} img/s")
    details, oks = [], []
    for key, c in combos.items():
        best = c["best_policy"]
        single_best = c["singles"].get(c["best_single_unit"]) if c["best_single_unit"] else None
        rate = c["policies"].get(best) if best else None
        rr = c["policies"].get("round_robin")
        if rate is not None and single_best is not None:
            oks.append(rate >= single_best)
        details.append(f"{key}: {best} {fmt(rate)} vs {c['best_single_unit']} "
                       f"{fmt(single_best)} (round_robin {fmt(rr)})")
    target("all units under the best policy >= the best single unit (round_robin beside it)",
           None if not oks else all(oks), "; ".join(details))
    target("numerical agreement (FP32 < 1e-5, FP16/BF16/AMP < 1e-2)",
           agree.get("passed") if agree.get("ran") else None,
           f"{sum(r['pass'] for r in agree.get('checks', []))}/{len(agree.get('checks', []))} checks")
    md.append("")
    md.append(f"Profiles measured by `mica profile`: {', '.join(profiles) or 'none'} "
              "(config/profiles/h100/).")

    results = {
        "gpu": gpu,
        "torch": torch_line,
        "mode": args.mode,
        "elapsed_s": args.elapsed,
        "targets": targets,
        "single_units": {u: {str(b): v for b, v in d.items()} for u, d in single.items()},
        "batch1_latency": latency,
        "streams": {str(b): v for b, v in streams.items()},
        "combinations": combos,
        "agreement": agree,
        "torch_reference": ref,
        "runs": runs,
        "profiles": profiles,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = "\n".join(md) + "\n"
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
