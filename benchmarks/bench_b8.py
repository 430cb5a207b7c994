"""edgeship benchmark B8 (see benchmarks/README.md): the bundle's default ÷ the fastest gated peer.

    .venv/bin/python benchmarks/bench_b8.py [--quick] [--size 224] [--out FILE.md]

Per model (SimpleNet 1x10; ResNetish, MobileNetish, EfficientNetish and SEResNetish from
tests/models.py at 1x3xSIZExSIZE; MiniLM with real weights, batch 1, seq 16) this exports a bundle with
edgeship (fp32, dynamic and, for the CNNs, static int8 with bench_quant's calibration data), then
times side by side, each configuration in its own worker process, one block per round in a new random
order each round after a pause (bench_quant's settle time):

  default      the bundle's default candidate, through ``edgeship.load`` and ``Model.__call__``
  ort fp32     the bundle's fp32 file on onnxruntime, default SessionOptions
  ort daz      the same with session config ``session.set_denormal_as_zero=1``
  ort <int8>   each int8 file of the bundle on onnxruntime, default SessionOptions
  ov f32       the fp32 file on OpenVINO, ``INFERENCE_PRECISION_HINT=f32``
  ov default   the fp32 file on OpenVINO with no hints (bf16 on CPUs that have it)
  ov int8      the static-int8 QDQ file on OpenVINO (no hint: OpenVINO runs the QDQ parts in int8)

Peers use onnxruntime and OpenVINO directly (file paths, their own defaults), not edgeship. A peer
counts only when its outputs on the bundle's golden inputs pass edgeship's tolerance for its
precision class (fp32, int8, bf16 for OpenVINO's default where the CPU has bf16), judged by
``edgeship.parity.evaluate.judge_outputs``. A second onnxruntime fp32 worker (the twin, not a peer)
gives the run's noise floor. Rounds in which everything ran slow at once (median of
each configuration's time ÷ its own median above 1.15: a slow spell of the shared VM) are dropped.

  B8   default median ÷ fastest gated peer median (target ≤ 1.0)
  B8a  default median ÷ OpenVINO's default precision, ungated (information)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import bench_quant as bq  # benchmarks/bench_quant.py: prepare, export_bundle, time_block, quiet
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "out" / "b8"
MODELS = ("SimpleNet", "ResNetish", "MobileNetish", "EfficientNetish", "SEResNetish", "MiniLM")
DISTURBED = 1.15


def log(msg: str) -> None:
    bq.log(f"B8 {msg}")


# ----------------------------------------------------------------------------- workers
def _open(kind: str, arg) -> tuple:
    """(call(feeds) -> list of outputs in the model's order, description)."""
    if kind == "default":
        import edgeship

        m = edgeship.load(arg, target="cpu")
        names = [t.name for t in m.outputs]
        if len(m.inputs) == 1 == len(names):  # the common call, as an app makes it: m(x) -> y
            only = m.inputs[0].name

            def call(feeds):
                return [m(feeds[only])]
        else:
            def call(feeds):
                out = m(feeds)
                return [out[n] for n in names]

        precision = m.candidate.precision if m.candidate is not None else m.variant
        return call, f"{m.variant}{'' if precision == m.variant else ' at ' + precision} on {m.runtime}"
    if kind in ("ort", "ort_daz"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if kind == "ort_daz":
            so.add_session_config_entry("session.set_denormal_as_zero", "1")
        s = ort.InferenceSession(str(arg), so, providers=["CPUExecutionProvider"])
        return (lambda feeds: s.run(None, feeds)), kind
    import openvino as ov  # kind "ov": arg = (path, precision hint or None)

    core = ov.Core()
    path, hint = arg
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": hint} if hint else {})
    request, ports = compiled.create_infer_request(), list(compiled.outputs)
    got = compiled.get_property("INFERENCE_PRECISION_HINT")
    got = got.get_type_name() if hasattr(got, "get_type_name") else str(got)

    def run(feeds):
        res = request.infer(feeds)
        return [np.array(res[p], copy=True) for p in ports]

    return run, f"openvino {got}"


def _worker(conn, kind, arg, feeds, golden) -> None:
    try:
        with bq.quiet():
            call, desc = _open(kind, arg)
            outs = [[np.asarray(o) for o in call(g)] for g in golden]
    except Exception as e:  # noqa: BLE001 - report to the parent
        conn.send(("error", f"{kind} {arg}: {e!r}"))
        return
    conn.send(("ready", desc, outs))
    fn = lambda: call(feeds)  # noqa: E731
    while True:
        cmd, val = conn.recv()
        if cmd == "stop":
            return
        if cmd == "calls":  # warm up, then size a block to ~val seconds
            for _ in range(3):
                fn()
            conn.send(max(1, min(5000, round(val / max(bq.time_block(fn, 3), 1e-7)))))
        else:  # a few untimed calls first: the pool threads slept during the pause
            bq.time_block(fn, max(2, val // 10))
            conn.send(bq.time_block(fn, val))


def measure(specs: dict, feeds: dict, golden: list[dict], repeats: int, block_s: float) -> dict:
    """specs: key -> (kind, arg). Per key: description, outputs on the golden inputs (or the error),
    seconds per call of each block; and the rounds kept."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs, conns, res = {}, {}, {}
    for k, (kind, arg) in specs.items():
        a, b = ctx.Pipe()
        procs[k] = ctx.Process(target=_worker, args=(b, kind, arg, feeds, golden), daemon=True)
        procs[k].start()
        conns[k] = a
    try:
        for k, c in conns.items():
            msg = c.recv()
            res[k] = {"error": msg[1]} if msg[0] == "error" else {"desc": msg[1], "outputs": msg[2], "times": []}
        live = [k for k in specs if "error" not in res[k]]

        def ask(k, cmd, val):
            conns[k].send((cmd, val))
            return conns[k].recv()

        calls = {k: ask(k, "calls", block_s) for k in live}
        rng = np.random.default_rng(0)
        for _ in range(repeats):
            for k in [live[i] for i in rng.permutation(len(live))]:
                time.sleep(bq.SETTLE_S)
                res[k]["times"].append(ask(k, "block", calls[k]))
        # a round where every configuration ran slow at once is a slow spell of the machine
        med = {k: statistics.median(res[k]["times"]) for k in live}
        slow = [statistics.median(res[k]["times"][r] / med[k] for k in live) for r in range(repeats)]
        keep = [r for r in range(repeats) if slow[r] <= DISTURBED] or list(range(repeats))
        for k in live:
            res[k]["kept"] = [res[k]["times"][r] for r in keep]
        return {"res": res, "kept": len(keep), "repeats": repeats}
    finally:
        for c in conns.values():
            with contextlib.suppress(Exception):
                c.send(("stop", None))
        for p in procs.values():
            p.join(5)
            if p.is_alive():
                p.kill()


# ----------------------------------------------------------------------------- one model
def peers(bundle: Path, manifest: dict) -> dict:
    """key -> (kind, arg, precision class, label) for every peer this bundle's files allow."""
    from edgeship.bundle.manifest import variants_of
    from edgeship.runtimes import openvino as ov_runtime

    vs = variants_of(manifest)
    out = {"ort:fp32": ("ort", bundle / vs["fp32"].file, "fp32", "ort fp32 (default options)"),
           "ort:daz": ("ort_daz", bundle / vs["fp32"].file, "fp32", "ort fp32 denormals-as-zero")}
    for name, v in vs.items():
        if v.precision == "int8":
            out[f"ort:{name}"] = ("ort", bundle / v.file, "int8", f"ort {name}")
    if ov_runtime.installed():
        out["ov:f32"] = ("ov", (bundle / vs["fp32"].file, "f32"), "fp32", "openvino f32")
        out["ov:default"] = ("ov", (bundle / vs["fp32"].file, None),
                             "bf16" if ov_runtime.has_bf16() else "fp32", "openvino default precision")
        if "int8_static" in vs:
            out["ov:int8_static"] = ("ov", (bundle / vs["int8_static"].file, None), "int8",
                                     "openvino int8_static (QDQ)")
    return out


def gate(outputs: list[list[np.ndarray]], samples, refs: list[dict], precision: str) -> tuple[bool, str]:
    """edgeship's own tolerance for ``precision`` on the golden samples: (passed, summary)."""
    from edgeship.parity.evaluate import RunResult, judge_outputs
    from edgeship.parity.tolerances import tolerance_for

    names = list(refs[0])
    results = [RunResult("peer", i, s, dict(zip(names, outs))) for i, (s, outs) in enumerate(zip(samples, outputs))]
    rep = judge_outputs(results, refs, tolerance_for(precision), precision)
    cos = min((c.metrics.get("cosine", 1.0) for c in rep.checks if c.metrics), default=float("nan"))
    fails = [c.reason for c in rep.checks if not c.passed]
    return rep.passed, f"cos {cos:.5f}" + (f"; {fails[0]}" if fails else "")


def bench_model(name: str, size: int, repeats: int, block_s: float) -> dict:
    from edgeship.bundle.read import open_bundle
    from edgeship.parity.check import golden_samples
    from edgeship.spec import IOSpec

    t0 = time.perf_counter()
    with bq.quiet():
        m = bq.prepare(name, size=size, work=WORK)
        bq.export_bundle(m)
    export_s = time.perf_counter() - t0
    b = open_bundle(m["bundle"])
    samples, refs = golden_samples(b, IOSpec.from_dict(b.manifest["io"]))
    feeds = samples[0].feeds
    ps = peers(Path(m["bundle"]), b.manifest)
    specs = {"default": ("default", str(m["bundle"]))} | {k: (kind, arg) for k, (kind, arg, _, _) in ps.items()}
    specs["twin"] = specs["ort:fp32"]  # the same peer in a second process: this run's noise floor
    meas = measure(specs, feeds, [s.feeds for s in samples], repeats, block_s)
    res = meas["res"]
    rows = {}
    for k, r in res.items():
        if "error" in r:
            rows[k] = {"error": r["error"], "label": ps[k][3] if k in ps else k}
            continue
        row = {"ms": statistics.median(r["kept"]) * 1e3, "desc": r["desc"]}
        if k == "twin":
            row["label"] = "ort fp32 twin"
        elif k in ps:
            row["precision"], row["label"] = ps[k][2], ps[k][3]
            row["passed"], row["gate"] = gate(r["outputs"], samples, refs, ps[k][2])
        rows[k] = row
    gated = [k for k, r in rows.items() if k in ps and r.get("passed")]
    best = min(gated, key=lambda k: rows[k]["ms"])
    ov = rows.get("ov:default", {})
    cands = b.manifest.get("candidates", {}).get("cpu", [])
    same = same_peer(cands[0], ps) if cands else None
    return {"name": name, "shape": m["shape"], "rows": rows, "best": best, "export_s": export_s, "same": same,
            "b8": rows["default"]["ms"] / rows[best]["ms"],
            "b8a": rows["default"]["ms"] / ov["ms"] if "ms" in ov else None,
            "noise": rows["twin"]["ms"] / rows["ort:fp32"]["ms"],
            "kept": meas["kept"], "repeats": meas["repeats"],
            "default_candidate": cands[0]["id"] if cands else b.manifest["defaults"]["cpu"]}


def same_peer(c: dict, ps: dict) -> str | None:
    """The peer that runs the same configuration as candidate ``c`` (its file, runtime and
    precision, no options), or None (a candidate with options has no raw twin here)."""
    if c.get("options"):
        return None
    if c["runtime"] == "onnxruntime":
        key = "ort:fp32" if c["variant"] == "fp32" else f"ort:{c['variant']}"
    elif c["variant"] == "int8_static":
        key = "ov:int8_static"
    else:
        key = "ov:default" if c["precision"] == "bf16" else "ov:f32"
    return key if key in ps else None


# ----------------------------------------------------------------------------- report
def run(quick: bool, size: int) -> list[dict]:
    WORK.mkdir(parents=True, exist_ok=True)
    repeats, block_s = (5, 0.05) if quick else (11, 0.1)
    out = []
    for name in MODELS:
        log(f"{name}: export, then {repeats} interleaved rounds ...")
        r = bench_model(name, size, repeats, block_s)
        log(f"  {name}: default {r['default_candidate']} {r['rows']['default']['ms']:.3f} ms; best gated "
            f"{r['rows'][r['best']]['label']} {r['rows'][r['best']]['ms']:.3f} ms; B8 {r['b8']:.3f}")
        out.append(r)
    return out


def _same_text(r: dict, d: dict) -> str:
    twin = r["rows"].get(r["same"] or "", {})
    if "ms" not in twin:
        return ". The default has runtime options no peer has"
    which = "the fastest" if r["same"] == r["best"] else "not the fastest"
    return (f". The default runs the configuration of peer {twin['label']} ({which}): default ÷ it "
            f"{d['ms'] / twin['ms']:.3f}, the call path and noise")


def rows(results: list[dict]) -> list[dict]:
    table = []
    for r in results:
        rs = r["rows"]
        d, best = rs["default"], rs[r["best"]]
        parts = []
        for k, p in rs.items():
            if k in ("default", "twin"):
                continue
            if "error" in p:
                parts.append(f"{p['label']} failed to open")
                continue
            mark = "" if p["passed"] else " **gated out**"
            parts.append(f"{p['label']} [{p['desc']}] {p['ms']:.3f} ms ({p['precision']} gate: {p['gate'].split(';')[0]}){mark}")
        table.append(bq.row("B8", f"{r['name']} ({r['shape']}): bundle default {r['default_candidate']} "
                            f"({d['desc']}) via `edgeship.load` {d['ms']:.3f} ms ÷ fastest gated peer "
                            f"{best['label']} {best['ms']:.3f} ms. Peers: " + "; ".join(parts)
                            + _same_text(r, d)
                            + f". Noise floor: twin ort fp32 ÷ ort fp32 {r['noise']:.3f}. Rounds kept "
                            f"{r['kept']}/{r['repeats']}; export {r['export_s']:.1f} s",
                            r["b8"], "≤ 1.0", r["b8"] <= 1.0))
    for r in results:
        if r["b8a"] is not None:
            ov = r["rows"]["ov:default"]
            table.append(bq.row("B8a", f"{r['name']}: bundle default {r['rows']['default']['ms']:.3f} ms ÷ OpenVINO "
                                f"default precision [{ov['desc']}] {ov['ms']:.3f} ms, ungated "
                                f"({'passes' if ov['passed'] else 'misses'} the {ov['precision']} gate)",
                                r["b8a"], "—", True, info=True))
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run)")
    p.add_argument("--size", type=int, default=224, help="image side of the CNNs (default 224)")
    p.add_argument("--out", type=Path, default=WORK / "results.md")
    args = p.parse_args()
    t0, load = time.perf_counter(), os.getloadavg()
    text = (f"command: `python {' '.join(sys.argv)}`{' (quick)' if args.quick else ''}; {os.cpu_count()} CPUs, "
            f"load {load[0]:.2f} at start; ")
    table = bq.table(rows(run(args.quick, args.size)))
    text += f"{time.perf_counter() - t0:.0f} s\n\n" + table + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
