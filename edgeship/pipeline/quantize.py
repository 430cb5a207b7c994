"""Stage 5, quantize: build the requested variants, prove each, and fall back where int8 hurts.

Reads ``spec``, ``samples``, ``references`` and the ``fp32`` variant; adds ``targets``, one
:class:`Variant` per variant that passes, ``rejected`` for the others, ``calibration`` (static
int8) and ``divergence`` (where a failing variant first leaves fp32).

``auto`` builds dynamic int8 always, static int8 when ``--calibration`` gives real data (a
variant calibrated on random noise is never picked silently), fp16 where CUDA is a target, and
weight-only int4 for a decoder LM (a graph with ``past_key_values`` inputs and ``logits``).
Every variant is checked on the golden samples against the eager reference; an int8 variant
that misses its tolerance gets the accuracy-aware fallback: the nodes that add the most error
themselves (compared tensor by tensor with the fp32 graph) are kept in fp32, a few at a time,
until it passes or stops improving. A variant that still fails is recorded and not shipped.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from edgeship.errors import QuantizationError, SpecError, brief, clip
from edgeship.parity.evaluate import run_parity
from edgeship.parity.localize import ReferenceGraph
from edgeship.parity.report import OutputCheck, ParityReport
from edgeship.parity.tolerances import effective_tolerances
from edgeship.pipeline.context import Context, Degraded, Skip, Variant, required
from edgeship.pipeline.mobile import export_targets
from edgeship.runtimes.ort import OrtRunner
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)

KINDS = ("fp32", "dynamic", "static", "fp16", "int4")
VARIANT = {"dynamic": ("int8_dynamic", "int8"), "static": ("int8_static", "int8"), "fp16": ("fp16", "fp16"),
           "int4": ("int4", "int4")}
QUANTIZED = ("int8", "int4")  # precisions whose variant must hold quantized nodes
MAX_ROUNDS = 5
FALLBACK_FAILED = 4  # failing samples the fallback measures each node's harm on


def requested_kinds(quantize: tuple[str, ...], targets: list[str], calibrated: bool, decoder: bool = False) -> list[str]:
    kinds = []
    for q in quantize:
        if q == "auto":
            kinds += ["dynamic"] + (["static"] if calibrated else []) + (["fp16"] if "cuda" in targets else [])
            kinds += ["int4"] if decoder else []
        elif q in KINDS:
            kinds.append(q)
        else:
            raise SpecError(f"unknown --quantize {q!r}; use any of {', '.join(KINDS)} or auto (comma-separated).")
    return [k for k in dict.fromkeys(kinds) if k != "fp32"]


def _worst(report: ParityReport) -> dict:
    rows = report.summary()
    return {"min_cosine": min((r.get("cosine", 0.0) for r in rows), default=0.0),
            "max_abs": max((r.get("max_abs", math.inf) for r in rows), default=math.inf),
            "min_top1": min((r["top1"] for r in rows if "top1" in r), default=None)}


def _check(ctx: Context, path: Path, name: str, precision: str) -> ParityReport:
    tol = effective_tolerances(ctx.config).for_precision(precision)
    with OrtRunner(required(ctx.spec, "spec"), path, target="cpu", name="onnxruntime-cpu") as runner:
        return run_parity([runner], *ctx.gate_samples(), tol, name)  # held-out samples too: the gate


def quantize_stage(ctx: Context) -> str:
    from edgeship.exporters import quantize as q

    cfg = ctx.config
    ctx.targets = export_targets(cfg.targets)
    kinds = requested_kinds(cfg.quantize, ctx.targets, cfg.calibration is not None, is_decoder(ctx.spec))
    if "int4" in kinds:
        q.check_int4_settings(cfg.int4_block_size, cfg.int4_scheme)
    fp32 = ctx.variants["fp32"].file
    ctx.variants["fp32"] = replace(ctx.variants["fp32"], weight_bytes=q.weight_bytes(fp32))
    if not kinds:
        raise Skip("fp32 only (--quantize fp32)")
    done: list[str] = []
    missing: list[str] = []
    for kind in kinds:
        name, precision = VARIANT[kind]
        # the variant, onnxruntime's preprocessed copy and its calibration model (static int8)
        ctx.ensure_room(3 * fp32.stat().st_size, f"the {name} variant")
        try:
            built = _build(ctx, kind, name, precision, fp32)
        except QuantizationError as e:
            ctx.note(f"{name} not built: {e}")
            ctx.rejected[name] = {"reason": str(e)}
            built = None
        except Exception as e:  # onnxruntime refusing the graph while building or checking a variant
            if not _raised_in_onnxruntime(e):
                raise
            why = f"onnxruntime failed on it: {brief(e)}"
            ctx.note(f"{name} not built: {why}")
            ctx.rejected[name] = {"reason": why}
            built = None
        (done if built is not None else missing).append(name)
    return stage_detail(done, missing, ctx.rejected, ctx.notes)


def is_decoder(spec: IOSpec | None) -> bool:
    """A decoder LM's graph: ``input_ids`` and ``past_key_values.*`` in, ``logits`` out."""
    if spec is None:
        return False
    names = spec.input_names
    return "input_ids" in names and any(n.startswith("past_key_values.") for n in names) \
        and "logits" in spec.output_names


def _raised_in_onnxruntime(e: BaseException) -> bool:
    """Whether ``e`` was raised inside onnxruntime (its quantization tools or a session run): a
    variant onnxruntime cannot build or run is not shipped; the export goes on."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return last is not None and f"{os.sep}onnxruntime{os.sep}" in last


def stage_detail(done: list[str], missing: list[str], rejected: dict[str, dict], notes: Sequence[str] = ()) -> str:
    """The quantize stage's line: what was built; raises :class:`Degraded` (a warning line, not a
    ✓) when a requested variant failed to build or missed parity. A graph with nothing to quantize
    is no failure: that variant is simply not applicable."""
    failed = [n for n in missing if n in rejected]
    built = ", ".join(done) + " built" if done else "no quantized variant built"
    if not failed:  # not applicable: say why (e.g. dynamic int8 does not cover Conv, and what does)
        skipped = [next((n for n in notes if n.startswith(f"{m}: ")), f"{m}: nothing to quantize") for m in missing]
        return built + ("; " + "; ".join(skipped) if skipped else "")
    why = "; ".join(f"{n} NOT shipped ({clip(rejected[n].get('reason', 'see the notes'), 90)})" for n in failed)
    raise Degraded(f"{built}; {why}")


Build = Callable[[Sequence[str]], Path]


def _build(ctx: Context, kind: str, name: str, precision: str, fp32: Path) -> Variant | None:
    from edgeship.exporters import quantize as q

    cfg = ctx.config
    out = ctx.workdir / "models" / f"{name}.onnx"
    ref = fp32
    build: Build
    if kind == "dynamic":
        def build(exclude: Sequence[str]) -> Path:
            return q.build_dynamic(fp32, out, exclude)
    elif kind == "static":
        from edgeship.exporters.calibration import load_calibration

        example = ctx.samples[0].feeds if ctx.samples[0].label == "example" else None
        calib = ctx.calibration or load_calibration(  # the load stage's, when it held some out for the gates
            cfg.calibration, required(ctx.spec, "spec").inputs, cfg.calibration_samples, cfg.seed, example)
        ctx.calibration = calib
        if calib.synthetic:  # a note (printed once, with the others, and kept in report.json)
            ctx.note(f"WARNING: {name}: " + calib.to_dict()["warning"])
        ref = q.preprocess(fp32, ctx.workdir / "preprocessed.onnx")

        def build(exclude: Sequence[str]) -> Path:
            return q.build_static(ref, out, calib.samples, cfg.calibration_method, exclude)
    elif kind == "int4":
        if not q.int4_eligible(fp32):  # not applicable, as dynamic int8 on a graph of Conv
            ctx.note(f"{name}: {q.NO_INT4_MATMUL}; not built")
            return None

        def build(exclude: Sequence[str]) -> Path:
            return q.build_int4(fp32, out, cfg.int4_block_size, cfg.int4_scheme, exclude)
    else:
        def build(exclude: Sequence[str]) -> Path:
            return q.build_fp16(fp32, out, exclude)

    overflow: list[str] = []
    if kind == "fp16":
        overflow = _fp16_range(ctx, name, fp32)
        if overflow and not cfg.fallback:
            return None
        build(overflow)
        if overflow:
            ctx.note(f"{name}: kept {len(overflow)} node(s) in fp32 whose outputs exceed float16's range: "
                     + ", ".join(overflow[:6]))
    else:
        build([])
    if precision in QUANTIZED and q.count_quantized(out) == 0:
        ctx.note(f"{name}: {_nothing_quantized(kind, fp32)}; not built")
        out.unlink(missing_ok=True)
        return None
    report = _check(ctx, out, name, precision)
    before = _worst(report)
    excluded: list[str] = []
    if not report.passed and cfg.fallback:
        report, excluded = _fallback(ctx, name, kind, precision, ref, out, build, report)
    if precision in QUANTIZED and excluded and q.count_quantized(out) == 0:
        ctx.note(f"{name}: the fallback had to keep every node in fp32; not shipped")
        ctx.rejected[name] = {"reason": "nothing left quantized after the fallback", "excluded_nodes": excluded}
        return None
    excluded = overflow + excluded
    variant = Variant(name, out, precision, kind, tuple(excluded), before if excluded else None, _worst(report),
                      weight_bytes=q.weight_bytes(out), settings=_settings(cfg, kind))
    if not report.passed:
        bad = report.failures()[0]
        held = " (a held-out sample)" if bad.sample in {s.label for s in ctx.eval_samples} else ""
        ctx.note(f"{name} fails parity and is not shipped: {bad.output} on sample {bad.sample}{held}: {bad.reason}"
                 + (f" (after keeping {len(excluded)} node(s) in fp32)" if excluded else ""))
        _localise(ctx, name, precision, ref, out, bad)
        kept = ctx.workdir / "rejected" / out.name
        kept.parent.mkdir(exist_ok=True)
        shutil.move(out, kept)
        ctx.rejected[name] = {**variant.summary(), "reason": bad.reason}
        return None
    if excluded:
        ctx.note(f"{name}: kept {len(excluded)} node(s) in fp32 to pass parity: {', '.join(excluded[:6])}"
                 + (" ..." if len(excluded) > 6 else ""))
    ctx.variants[name] = variant
    return variant


def _settings(cfg, kind: str) -> dict | None:
    """How a variant was built, where the user chose it (int4's block size and scheme)."""
    return {"block_size": cfg.int4_block_size, "scheme": cfg.int4_scheme} if kind == "int4" else None


def _nothing_quantized(kind: str, fp32: Path) -> str:
    """Why quantization changed nothing, and what would: dynamic int8 does not cover Conv."""
    import onnx

    from edgeship.exporters.quantize import DYNAMIC_OPS, NO_INT4_MATMUL

    if kind == "int4":
        return NO_INT4_MATMUL
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(fp32), load_external_data=False).graph.node)
    if kind == "dynamic" and convs:
        return (f"dynamic int8 quantizes {'/'.join(DYNAMIC_OPS)} weights only, and this graph's compute is "
                f"{convs} Conv node(s), which it does not cover: use --quantize static --calibration DATA "
                "(static int8 quantizes Conv)")
    return f"nothing to quantize in this graph for {kind} int8 (no MatMul/Gemm/Conv/LSTM/GRU/Attention)"


def _fp16_range(ctx: Context, name: str, fp32: Path) -> list[str]:
    """Nodes whose fp32 outputs exceed float16's range on the golden samples. Without the
    fallback the variant is refused, naming the first; with it they stay in fp32."""
    from edgeship.parity.localize import describe, hint

    graph = ReferenceGraph(fp32, [s.feeds for s in ctx.samples])
    over = graph.fp16_overflows()
    if over and not ctx.config.fallback:
        where = {**over[0].to_dict(), "precision": "fp16", "hint": hint(over[0], "fp16"), "compared_tensors": None}
        ctx.divergence[name] = where
        ctx.rejected[name] = {"reason": f"float16 overflow at {over[0].node}"}
        ctx.note(f"{name} fails parity and is not shipped: NaN/Inf in float16 ({describe(where)})")
    if not over:
        return []
    # consumers of an overflowing tensor must stay fp32 too: the cast into them overflows
    hot = {e.output for e in over}
    blocked = [e.node for e in over] + [n.name for n in graph.graph.node if hot & set(n.input)]
    return list(dict.fromkeys(blocked))


def _localise(ctx: Context, name: str, precision: str, ref: Path, out: Path, bad: OutputCheck) -> None:
    """Say where the variant first leaves the fp32 graph, on the sample that failed."""
    from edgeship.parity.localize import describe, explain

    sample = next((s for s in ctx.gate_samples()[0] if s.label == bad.sample), ctx.samples[0])
    tol = effective_tolerances(ctx.config).get(precision, bad.output)
    where = explain(ref, out, [sample.feeds], precision, tol)
    if where:
        ctx.divergence[name] = where
        ctx.note(f"{name}: {describe(where)}")


def fallback_sizes(candidates: int, rounds: int = MAX_ROUNDS) -> list[int]:
    """How many nodes each fallback round keeps in fp32 in all: 5% of the candidates first
    (at least one), doubling each round, so even a large graph needs few rounds."""
    k = max(1, math.ceil(candidates * 0.05))
    return [k * 2**r for r in range(rounds)]


def _fallback(ctx: Context, name: str, kind: str, precision: str, ref: Path, out: Path, build: Build,
              report: ParityReport) -> tuple[ParityReport, list[str]]:
    """Keep the most harmful nodes in fp32, more each round, until parity passes or stops improving.

    Static QDQ: harm is measured per quantize/dequantize pair (and per int8 weight), so the
    nodes around the pair that does the damage are kept in fp32. Dynamic int8 and fp16: harm is
    the error each node adds to its output compared with the fp32 graph, tensor by tensor.
    """
    from edgeship.exporters.quantize import count_quantized, quantizable_nodes
    from edgeship.parity.localize import harmful_nodes

    # harm is measured where it shows: the samples the variant failed on (held-out ones included), and
    # the first two golden ones; the graph is parsed and run once for every round
    failed = {c.sample for c in report.failures()}
    feeds = [s.feeds for s in ctx.gate_samples()[0] if s.label in failed][:FALLBACK_FAILED]
    graph = ReferenceGraph(ref, feeds + [s.feeds for s in ctx.samples[:2] if s.label not in failed])
    candidates = quantizable_nodes(ref, kind, graph.graph)
    producers = graph.producers()
    excluded: list[str] = []
    best, stale = _score(_worst(report)), 0
    for round_, want in enumerate(fallback_sizes(len(candidates))):
        worst: list[str] = []
        if kind == "static":
            groups = sorted(graph.qdq_harm(out).items(), key=lambda kv: -kv[1])
            for nodes, h in groups:
                new = [n for n in nodes if n in candidates and n not in excluded and n not in worst]
                if h > 0 and new:
                    worst += new
                if len(worst) >= want:
                    break
        else:
            worst = harmful_nodes(graph.node_errors(out), candidates - set(excluded), want, producers)
        if not worst:
            break
        excluded += worst
        log.info("%s fallback round %d: keeping %s in fp32", name, round_ + 1, worst)
        build(excluded)
        if precision in QUANTIZED and count_quantized(out) == 0:
            break  # nothing left in int8: not a quantized variant any more
        report = _check(ctx, out, name, precision)
        if report.passed:
            break
        now = _score(_worst(report))
        stale = stale + 1 if now <= best + 1e-6 else 0
        if stale >= 2:  # two rounds without progress: stop
            break
        best = max(best, now)
    return report, excluded


def _score(worst: dict) -> float:
    """Higher is better: cosine plus top-1 agreement where it applies."""
    return worst["min_cosine"] + (worst["min_top1"] if worst["min_top1"] is not None else 1.0)
