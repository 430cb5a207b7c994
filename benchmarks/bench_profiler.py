"""B5: the profiler's p50 ÷ an independent timeit of ``session.run`` on the same session and feeds.

    python benchmarks/bench_profiler.py [--quick]       # or through benchmarks/run.py (make bench)

Models: SimpleNet (the bundle run.py builds) and ResNetish from tests/models.py (a small
ResNet-style CNN, 1×3×32×32, exported with the edgeship CLI into benchmarks/out/).

For each model one session is opened exactly as ``edgeship profile`` opens it
(``edgeship.profiling.harness.ort_harness``, one intra-op thread per core) with the profiler's feeds
(``edgeship.profiling.source.batch_feeds``). Then, interleaved with the order alternated each
repeat: the profiler's own timing loop (``edgeship.profiling.timing.time_calls``, the loop ``profile()``
runs) gives a p50 over N single calls, and ``timeit.Timer("run(names, feeds)").repeat(N, number=1)``
on the same session object gives N single-call times and their median (gc off in both). B5 is the
median over repeats of the profiler's p50 ÷ the same of timeit's. Target: 0.95 to 1.05.
B5a (info) compares means instead: the profiler's mean ÷ timeit's per-call mean of an N-call
block; on a shared machine both means follow its outliers more than the code being timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "out"


def build_cnn_bundle(cli: list[str]) -> Path:
    """Save ResNetish (seeded weights) and export it with the edgeship CLI."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    import models

    WORK.mkdir(parents=True, exist_ok=True)
    state = WORK / "resnetish_state.pt"
    bundle = WORK / "resnetish.edgeship"
    torch.save(models.trained(models.ResNetish()).state_dict(), state)
    subprocess.run(cli + ["export", str(state), "--arch", f"{ROOT / 'tests' / 'models.py'}:ResNetish", "--input",
                          "x:1x3x32x32", "--dynamic-batch", "--no-torchscript", "-o", str(bundle)],
                   check=True, stdout=subprocess.DEVNULL, cwd=WORK)
    return bundle


def measure(bundle: Path, repeats: int, calls: int) -> dict:
    from edgeship.profiling.harness import ort_harness
    from edgeship.profiling.source import batch_feeds, open_source
    from edgeship.profiling.stats import Stats
    from edgeship.profiling.timing import time_calls
    from edgeship.runtimes.ort import providers_for

    src = open_source(bundle)
    feeds = batch_feeds(src, 1)
    h = ort_harness(src.model(src.variants[0]), "cpu", providers_for("cpu"), os.cpu_count() or 1, feeds)
    names, _ = h.args
    timer = timeit.Timer("run(names, feeds)", globals={"run": h.session.run, "names": names, "feeds": feeds})

    def profiler() -> tuple[float, float]:  # p50 and mean, µs, as profile() computes them
        s = Stats.of(time_calls(h.call, h.args, 0, calls) / 1e6)
        return s.p50 * 1e3, s.mean * 1e3

    def reference() -> tuple[float, float]:  # timeit: median of single timed calls, and a block's mean
        return statistics.median(timer.repeat(repeat=calls, number=1)) * 1e6, timer.timeit(calls) / calls * 1e6

    fns = {"profiler": profiler, "timeit": reference}
    for fn in fns.values():  # warm-up
        fn()
    res = {k: [] for k in fns}
    for r in range(repeats):
        for k in (("profiler", "timeit") if r % 2 == 0 else ("timeit", "profiler")):
            res[k].append(fns[k]())
    h.close()
    p50 = {k: statistics.median(v[0] for v in vs) for k, vs in res.items()}
    mean = {k: statistics.median(v[1] for v in vs) for k, vs in res.items()}
    return {"us": p50, "ratio": p50["profiler"] / p50["timeit"], "mean_us": mean,
            "mean_ratio": mean["profiler"] / mean["timeit"],
            "paired": statistics.median(a[0] / b[0] for a, b in zip(res["profiler"], res["timeit"])),
            "repeats": repeats, "calls": calls}


def bench_b5(simplenet: Path, cnn: Path, quick: bool) -> dict:
    reps = 7 if quick else 21
    return {"SimpleNet": measure(simplenet, reps, 1000 if quick else 3000),
            "ResNetish": measure(cnn, reps, 100 if quick else 300)}


def rows(b5: dict, row) -> list[str]:
    """results.md rows, one per model (``row`` is run.py's row formatter), plus the means (info)."""
    out = [row("B5", f"profiler p50 ÷ timeit of `session.run` (median of single timed calls), same session and "
                     f"feeds, {name} batch 1 ({m['us']['profiler']:.2f} µs vs {m['us']['timeit']:.2f} µs)",
               m["ratio"], "0.95–1.05", 0.95 <= m["ratio"] <= 1.05) for name, m in b5.items()]
    out += [row("B5a", f"profiler mean ÷ timeit per-call mean of a {m['calls']}-call block, {name} "
                       f"({m['mean_us']['profiler']:.2f} µs vs {m['mean_us']['timeit']:.2f} µs): outliers included",
                m["mean_ratio"], "0.95–1.05", 0.95 <= m["mean_ratio"] <= 1.05, info=True) for name, m in b5.items()]
    return out


def note(b5: dict) -> str:
    m = next(iter(b5.values()))
    paired = ", ".join(f"{k} {v['paired']:.3f}" for k, v in b5.items())
    return (f"B5: ratio of medians over {m['repeats']} interleaved repeats per model (SimpleNet "
            f"{b5['SimpleNet']['calls']}, ResNetish {b5['ResNetish']['calls']} calls each; median of per-repeat "
            f"ratios: {paired}); the profiler's loop (`edgeship.profiling.timing.time_calls`) and `timeit.Timer.repeat(number=1)` "
            f"each time single calls of `run` on one session opened as `edgeship profile` opens it "
            f"(intra_op_num_threads={os.cpu_count()}). B5a compares means, which the shared machine's outliers dominate.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    from run import build_bundle, cli, row  # benchmarks/run.py

    _, simplenet = build_bundle()
    b5 = bench_b5(simplenet, build_cnn_bundle(cli()), args.quick)
    print("\n".join(rows(b5, row)))
    print(note(b5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
