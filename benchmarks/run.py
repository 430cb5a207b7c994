"""edgeship benchmarks: side-by-side ratios in one run (see README.md, "Performance", and benchmarks/README.md).

    python benchmarks/run.py --out benchmarks/results.md [--quick]

Working files (SimpleNet weights, the bundle, the child scripts) go to benchmarks/out/.
Every figure is a ratio of two things measured interleaved in this run, median of repeats:
the machines are shared and noisy, so absolute times are printed for context only.

  B3  Model.__call__ / raw InferenceSession.run, SimpleNet, batch 1, same session options
  B5  profiler p50 / timeit of session.run on the same session and feeds (bench_profiler.py)
  B6  load + first inference in a fresh torch-free process / the same in eager PyTorch,
      wall time of the whole subprocess and peak RSS (VmHWM inside each child)
  B8  the bundle's default through edgeship.load / the fastest peer that passes edgeship's
      tolerance: onnxruntime and OpenVINO configurations, each in its own process (bench_b8.py)
  B9  a small causal LM: decode tokens/s and prefill of edgeship vs Optimum's ORTModelForCausalLM and
      onnxruntime-genai, each engine in its own process, anchors in venvs of their own (bench_b9.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import bench_profiler  # benchmarks/bench_profiler.py: B5
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
WORK = BENCH / "out"
EXAMPLE = ROOT / "examples" / "simplenet"
PY = sys.executable


# ----------------------------------------------------------------------------- setup
def cli() -> list[str]:
    exe = Path(PY).parent / "edgeship"
    return [str(exe)] if exe.exists() else [PY, "-m", "edgeship"]


def build_bundle() -> tuple[Path, Path]:
    """Train SimpleNet (seed 0, examples/simplenet/train.py) and export it with the CLI."""
    WORK.mkdir(parents=True, exist_ok=True)
    state = WORK / "simplenet_state.pt"
    bundle = WORK / "simplenet.edgeship"
    subprocess.run([PY, str(EXAMPLE / "train.py"), "--out", str(WORK)], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(bundle, ignore_errors=True)
    subprocess.run(cli() + ["export", str(state), "--arch", f"{EXAMPLE / 'model.py'}:SimpleNet",
                            "--input", "x:1x10", "--dynamic-batch", "-o", str(bundle)],
                   check=True, stdout=subprocess.DEVNULL, cwd=WORK)
    return state, bundle


# ----------------------------------------------------------------------------- B3
def time_block(fn, n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` back-to-back calls (gc off, like timeit)."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n
    finally:
        if gc_was:
            gc.enable()


def bench_b3(bundle: Path, repeats: int, calls: int) -> dict:
    import edgeship

    m = edgeship.load(bundle, target="cpu")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = os.cpu_count() or 1
    raw = ort.InferenceSession(str(bundle / "models" / "fp32.onnx"), so,
                               providers=["CPUExecutionProvider"])
    own = m._runner.session
    x = np.random.default_rng(0).standard_normal((1, 10), dtype=np.float32)
    assert np.array_equal(m(x), raw.run(None, {"x": x})[0])

    fns = {
        "model": lambda: m(x),                          # edgeship Model.__call__
        "raw": lambda: raw.run(None, {"x": x}),         # separate raw session, same options
        "own": lambda: own.run(None, {"x": x}),         # the Model's own session, no wrapper
    }
    for fn in fns.values():  # warm-up
        time_block(fn, calls // 4)
    times = {k: [] for k in fns}
    order = list(fns)
    for r in range(repeats):  # A/B/C blocks, order rotated each repeat to cancel drift
        for k in order[r % 3:] + order[:r % 3]:
            times[k].append(time_block(fns[k], calls))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "us": {k: v * 1e6 for k, v in med.items()},
        "ratio": med["model"] / med["raw"],
        "ratio_own": med["model"] / med["own"],
        "paired": statistics.median(a / b for a, b in zip(times["model"], times["raw"])),
        "repeats": repeats, "calls": calls,
    }


# ----------------------------------------------------------------------------- B6
# in both children: their own peak RSS
_PEAK = '''def _peak_kb():
    # this process's own peak RSS: VmHWM belongs to the memory map exec made; ru_maxrss also keeps the
    # parent's RSS at fork (Linux carries it across exec), so a child of a big process reads big
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
'''

_FREE_CHILD = """\
import time
_t0 = time.perf_counter()
import sys

class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "onnx"):
            raise ImportError(f"benchmark blocks {name!r} in the torch-free child")
        return None

sys.meta_path.insert(0, _BlockTorch())
#PEAK

import numpy as np
import edgeship

m = edgeship.load(sys.argv[1], target="cpu")
y = m(np.ones((1, 10), dtype=np.float32))
_t1 = time.perf_counter()
assert y.shape == (1, 1), y.shape
assert "torch" not in sys.modules and "onnx" not in sys.modules, "torch/onnx got imported"
print("RESULT", float(y.ravel()[0]), _t1 - _t0, _peak_kb())
""".replace("#PEAK\n", _PEAK)

_TORCH_CHILD = """\
import time
_t0 = time.perf_counter()
import sys
#PEAK

import torch

sys.path.insert(0, sys.argv[2])
from model import SimpleNet

net = SimpleNet()
net.load_state_dict(torch.load(sys.argv[1], weights_only=True))
net.eval()
with torch.no_grad():
    y = net(torch.ones(1, 10))
_t1 = time.perf_counter()
print("RESULT", float(y.ravel()[0]), _t1 - _t0, _peak_kb())
""".replace("#PEAK\n", _PEAK)


def run_child(script: Path, *args: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([PY, str(script), *args], capture_output=True, text=True, cwd=WORK, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({p.returncode}):\n{p.stderr}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    _, y, inside, rss_kb = line.split()
    return {"wall": wall, "inside": float(inside), "rss_kb": int(rss_kb), "y": float(y)}


def bench_b6(state: Path, bundle: Path, repeats: int) -> dict:
    free = WORK / "b6_torch_free.py"
    eager = WORK / "b6_torch_eager.py"
    free.write_text(_FREE_CHILD)
    eager.write_text(_TORCH_CHILD)
    kids = {
        "edgeship": lambda: run_child(free, str(bundle)),
        "torch": lambda: run_child(eager, str(state), str(EXAMPLE)),
    }
    for fn in kids.values():  # warm-up: page cache, .pyc files
        fn()
    res = {k: [] for k in kids}
    for r in range(repeats):  # interleaved, order alternated
        for k in (("edgeship", "torch") if r % 2 == 0 else ("torch", "edgeship")):
            res[k].append(kids[k]())
    y_es, y_t = res["edgeship"][0]["y"], res["torch"][0]["y"]
    assert abs(y_es - y_t) <= 1e-4 + 1e-3 * abs(y_t), (y_es, y_t)
    med = {k: {f: statistics.median(d[f] for d in v) for f in ("wall", "inside", "rss_kb")}
           for k, v in res.items()}
    return {
        "med": med,
        "wall": med["edgeship"]["wall"] / med["torch"]["wall"],
        "inside": med["edgeship"]["inside"] / med["torch"]["inside"],
        "rss": med["edgeship"]["rss_kb"] / med["torch"]["rss_kb"],
        "repeats": repeats,
    }


# ----------------------------------------------------------------------------- report
def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def row(bid: str, figure: str, measured: float, target: str, ok: bool, *, info: bool = False) -> str:
    verdict = "info" if info else ("pass" if ok else "**FAIL**")
    return f"| {bid} | {figure} | {measured:.3f} | {target} | {verdict} |"


def report(b3: dict, b6: dict, command: str, load: tuple, quick: bool, b5: dict | None = None) -> str:
    us = b3["us"]
    med = b6["med"]
    lines = [
        "# edgeship benchmark results",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{command}`" + (" (quick mode: fewer repeats)" if quick else ""),
        (f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.platform()}; "
         f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"),
        (f"- python {platform.python_version()}, onnxruntime {ort.__version__}, torch {version('torch')}, "
         f"numpy {np.__version__}, edgeship {version('edgeship')}"),
        "",
        "| id | figure | measured | target | result |",
        "|---|---|---|---|---|",
        row("B3", f"`Model.__call__` ÷ raw `InferenceSession.run`, SimpleNet batch 1 "
                  f"({us['model']:.2f} µs vs {us['raw']:.2f} µs per call)",
            b3["ratio"], "≤ 1.10", b3["ratio"] <= 1.10),
        row("B3a", f"`Model.__call__` ÷ `run` on the Model's own session ({us['own']:.2f} µs): "
                   f"wrapper overhead alone", b3["ratio_own"], "≤ 1.10", b3["ratio_own"] <= 1.10, info=True),
        *(bench_profiler.rows(b5, row) if b5 else []),
        row("B6", f"load + first inference, fresh process wall time: torch-free edgeship "
                  f"({med['edgeship']['wall']:.3f} s) ÷ eager PyTorch ({med['torch']['wall']:.3f} s)",
            b6["wall"], "≤ 0.5", b6["wall"] <= 0.5),
        row("B6", f"peak RSS: edgeship ({med['edgeship']['rss_kb'] / 1024:.1f} MiB) ÷ eager PyTorch "
                  f"({med['torch']['rss_kb'] / 1024:.1f} MiB)",
            b6["rss"], "≤ 0.3", b6["rss"] <= 0.3),
        row("B6a", f"same, time inside the child from its first line ({med['edgeship']['inside']:.3f} s "
                   f"÷ {med['torch']['inside']:.3f} s)", b6["inside"], "≤ 0.5", b6["inside"] <= 0.5, info=True),
        "",
        (f"B3: ratio of medians over {b3['repeats']} interleaved blocks of {b3['calls']} calls "
         f"(median of per-block ratios: {b3['paired']:.3f}); both sessions use intra_op_num_threads="
         f"{os.cpu_count()}. B6: medians of {b6['repeats']} interleaved fresh processes each; "
         "the edgeship child blocks `torch`/`onnx` imports and asserts torch never loaded. "
         "Rows marked info are diagnostics, not targets."),
        *(["", bench_profiler.note(b5)] if b5 else []),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=BENCH / "results.md")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("--no-quant", action="store_true", help="skip B1, B2, B4, B7 (bench_quant.py)")
    p.add_argument("--no-b8", action="store_true", help="skip B8 (bench_b8.py)")
    p.add_argument("--no-b9", action="store_true", help="skip B9 (bench_b9.py: creates the anchor venvs on first use)")
    args = p.parse_args()
    command = " ".join(["python", *sys.argv])
    load = os.getloadavg()
    t0 = time.perf_counter()

    print("building the SimpleNet bundle in benchmarks/out/ ...", flush=True)
    state, bundle = build_bundle()
    print("B3: Model.__call__ vs InferenceSession.run ...", flush=True)
    b3 = bench_b3(bundle, repeats=11 if args.quick else 31, calls=1000 if args.quick else 2000)
    print("B6: torch-free cold start vs eager PyTorch ...", flush=True)
    b6 = bench_b6(state, bundle, repeats=5 if args.quick else 9)
    print("B5: profiler p50 vs timeit of session.run (SimpleNet, ResNetish) ...", flush=True)
    b5 = bench_profiler.bench_b5(bundle, bench_profiler.build_cnn_bundle(cli()), args.quick)

    text = report(b3, b6, command, load, args.quick, b5)
    if not args.no_quant:
        print("B1, B2, B4, B7: quantized variants, speedups, export cost, accuracy (a few minutes) ...", flush=True)
        import bench_quant

        text += ("\n## Quantization, speed-up, export cost, accuracy (B1, B2, B4, B7)\n\n"
                 + bench_quant.table(bench_quant.run(args.quick)) + "\n\n" + bench_quant.__doc__.split("\n\n", 2)[2] + "\n")
    if not args.no_b8:
        print("B8: bundle default vs the fastest gated onnxruntime/OpenVINO peer (a few minutes) ...", flush=True)
        import bench_b8
        import bench_quant

        t8 = time.perf_counter()
        b8 = bench_quant.table(bench_b8.rows(bench_b8.run(args.quick, 224)))
        text += (f"\n## Default vs the fastest gated peer (B8), CNNs at 1x3x224x224, "
                 f"{time.perf_counter() - t8:.0f} s\n\n" + b8 + "\n\n" + bench_b8.__doc__.split("\n\n", 2)[2] + "\n")
    if not args.no_b9:
        print("B9: small causal LM, decode tokens/s vs Optimum and onnxruntime-genai (a few minutes) ...", flush=True)
        import bench_b9

        t9 = time.perf_counter()
        b9 = bench_b9.run(args.quick)
        text += (f"\n## Small causal LM vs Optimum and onnxruntime-genai (B9), {time.perf_counter() - t9:.0f} s\n\n"
                 + bench_b9.table(b9) + "\n\n" + bench_b9.note(b9) + "\n\n" + bench_b9.__doc__.split("\n\n", 2)[2] + "\n")
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
