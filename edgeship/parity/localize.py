"""Divergence localisation: where in the graph does a candidate start to differ?

Both models are run with every intermediate float tensor exposed as an output (onnxruntime's
``qdq_loss_debug`` helpers do the graph surgery), tensors are matched by name, and nodes are
walked in the reference graph's topological order. Quantization (QDQ) and float16 conversion
keep the original tensor names, so the comparison is direct.

Two uses: :func:`first_divergence` names the first node whose output misses the tolerance
(with a hint), and :func:`harmful_nodes` ranks nodes by the error they add themselves (their
output's error minus their inputs'), which the int8 fallback keeps in fp32.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
FP16_MAX = 65504.0


@dataclass(frozen=True)
class NodeError:
    """How far one node's output is from the reference (worst over the feeds)."""

    node: str
    op_type: str
    output: str
    inputs: tuple[str, ...]
    max_abs: float
    rel_err: float      # fraction of values off by more than 10% (see off_fraction)
    cosine: float
    local: float        # rel_err minus the worst rel_err of the node's inputs: error added here
    ref_max: float      # max |ref|, for range hints
    nonfinite: int      # NaN/Inf in the candidate where the reference is finite

    def to_dict(self) -> dict:
        return asdict(self)


def _activations(model_path: Path, feeds: list[dict], workdir: Path) -> dict[str, list[np.ndarray]]:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    aug = workdir / f"{model_path.stem}.all_outputs.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(aug))
    return collect_activations(str(aug), feeds)


class ReferenceGraph:
    """The reference (fp32) graph of a comparison: parsed once, its intermediate activations on
    ``feeds`` computed once, however many candidates are compared with it (the int8 fallback
    compares a new candidate each round)."""

    def __init__(self, path: Path, feeds: list[dict]):
        self.path = Path(path)
        self.feeds = feeds
        self._graph = None
        self._acts: dict[str, list[np.ndarray]] | None = None

    @property
    def graph(self):
        if self._graph is None:
            import onnx

            self._graph = onnx.load(str(self.path), load_external_data=False).graph
        return self._graph

    @property
    def activations(self) -> dict[str, list[np.ndarray]]:
        if self._acts is None:
            with tempfile.TemporaryDirectory(prefix="edgeship-localize-") as tmp:
                self._acts = _activations(self.path, self.feeds, Path(tmp))
        return self._acts

    def producers(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """tensor name -> (producing node's name, its inputs)."""
        return {out: (n.name or out, tuple(n.input)) for n in self.graph.node for out in n.output}

    def node_errors(self, candidate: Path) -> list[NodeError]:
        """Per-node errors of ``candidate`` against the reference, in topological order."""
        ref = self.activations
        with tempfile.TemporaryDirectory(prefix="edgeship-localize-") as tmp:
            got = _activations(Path(candidate), self.feeds, Path(tmp))
        return _node_errors(self.graph, ref, got)

    def qdq_harm(self, qdq_model: Path) -> dict[tuple[str, ...], float]:
        return _qdq_harm(self.path, self.graph, qdq_model, self.feeds)

    def fp16_overflows(self) -> list[NodeError]:
        return _fp16_overflows(self.graph, self.activations)


def node_errors(reference: Path, candidate: Path, feeds: list[dict]) -> list[NodeError]:
    """Per-node errors of ``candidate`` against ``reference``, in topological order."""
    return ReferenceGraph(reference, feeds).node_errors(candidate)


def _node_errors(graph, ref: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]]) -> list[NodeError]:
    producer = {o: n for n in graph.node for o in n.output}
    rel: dict[str, float] = {}
    errors = []
    for node in graph.node:
        for out in node.output:
            if out not in ref or out not in got:
                continue
            r = np.concatenate([a.astype(np.float64).ravel() for a in ref[out]])
            g = np.concatenate([a.astype(np.float64).ravel() for a in got[out]])
            if r.shape != g.shape:
                continue
            name, op, inputs = node.name or out, node.op_type, tuple(node.input)
            if op == "Relu" and node.input and node.input[0] not in got and node.input[0] in producer:
                # the quantizer folded this Relu into the node before it (QDQ clamps at zero):
                # the candidate tensor is that node's output; compare after the clamp, name that node
                g = np.maximum(g, 0.0)
                fused = producer[node.input[0]]
                name, op, inputs = fused.name or node.input[0], f"{fused.op_type}+Relu", tuple(fused.input)
            finite = np.isfinite(r)
            nonfinite = int(np.count_nonzero(finite & ~np.isfinite(g)))
            g_safe = np.where(np.isfinite(g), g, 0.0)
            r_safe = np.where(finite, r, 0.0)
            diff = r_safe - g_safe
            nr = float(np.linalg.norm(r_safe))
            rel[out] = max(off_fraction(a, b) for a, b in zip(ref[out], got[out])) if op == node.op_type \
                else off_fraction(r, g)
            ng = float(np.linalg.norm(g_safe))
            cos = 1.0 if nr == ng == 0 else (float(r_safe @ g_safe / (nr * ng)) if nr and ng else 0.0)
            upstream = max((rel.get(i, 0.0) for i in inputs), default=0.0)
            if nonfinite:
                rel[out] = float("inf")  # NaN/Inf born here (or carried): rank it first
            errors.append(NodeError(
                name, op, out, inputs,
                float(np.abs(diff).max()) if diff.size else 0.0, rel[out], cos,
                (rel[out] - upstream) if rel[out] != upstream else 0.0,
                float(np.abs(r_safe).max()) if r.size else 0.0, nonfinite,
            ))
    return errors


def off_fraction(ref, got) -> float:
    """Fraction of values off by more than 10% (plus 1% of the tensor's RMS, so values near zero
    do not count). Unlike a global relative error it sees small channels crushed to zero by an
    int8 range that one outlier channel dominates."""
    r = np.nan_to_num(np.asarray(ref, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    g: np.ndarray = np.asarray(got, dtype=np.float64).ravel()
    if r.shape != g.shape or r.size == 0:
        return 0.0
    bad = ~np.isfinite(g)
    g = np.where(bad, 0.0, g)
    rms = float(np.sqrt(np.mean(r * r)))
    return float(np.mean(bad | (np.abs(r - g) > 0.1 * np.abs(r) + 0.01 * rms)))


def hint(e: NodeError, precision: str, static: bool = True) -> str:
    """A likely cause, from the node's op type and numbers; ``static``: the int8 model is static
    QDQ (calibrated), else dynamic int8 (no calibration involved)."""
    if e.nonfinite and (precision == "fp16" or e.ref_max > FP16_MAX):
        return (f"fp16 overflow: the reference reaches {e.ref_max:.3g}, beyond float16's {FP16_MAX:.0f}; "
                "keep this node in fp32 (or rescale the activations)")
    if precision == "fp16" and e.ref_max > FP16_MAX / 4:
        return f"fp16 range: the reference reaches {e.ref_max:.3g}, close to float16's limit of {FP16_MAX:.0f}"
    if e.nonfinite:
        return "NaN/Inf appear here although the reference is finite"
    if e.op_type == "Resize":
        return "Resize: check the interpolation mode and coordinate_transformation_mode the exporter chose"
    if precision == "int8" and not static:
        return ("dynamic int8: this node's int8 weights (or its activations, quantized on each call) lose too "
                "much precision; let the fallback keep it in fp32 (drop --no-fallback), or try static int8 "
                "calibrated on real data")
    if precision == "int8":
        return ("int8: this node's quantized range clips or coarsens its values (calibration range too "
                "narrow or too wide); calibrate on real data, try --calibration-method percentile, or "
                "let the fallback keep it in fp32")
    return "numerical difference first exceeds the tolerance here"


def first_divergence(errors: list[NodeError], min_cosine: float | None = None, atol: float | None = None):
    """The first node (topological order) whose output misses the tolerance, or None."""
    for e in errors:
        if e.nonfinite:
            return e
        if min_cosine is not None and e.cosine < min_cosine:
            return e
        if atol is not None and min_cosine is None and e.max_abs > atol:
            return e
    return None


def _nearest_candidates(tensors, producers, candidates: set[str], limit: int = 64) -> set[str]:
    """The candidate nodes nearest upstream of ``tensors``, walking through non-candidates."""
    found: set[str] = set()
    seen: set[str] = set()
    frontier = list(tensors)
    while frontier and len(seen) < limit:
        t = frontier.pop()
        if t in seen or t not in producers:
            continue
        seen.add(t)
        node, inputs = producers[t]
        if node in candidates:
            found.add(node)
        else:
            frontier.extend(inputs)
    return found


def harmful_nodes(errors: list[NodeError], candidates: set[str], k: int,
                  producers: dict | None = None) -> list[str]:
    """The ``k`` candidate nodes whose quantization adds the most error.

    Each node's own added error (``local``) is charged to itself when it is a candidate, else to
    the nearest candidates upstream (an int8 Gemm's error often shows first in the Relu after it).
    """
    harm: dict[str, float] = {}
    for e in errors:
        if e.local <= 0:
            continue
        owners = {e.node} if e.node in candidates else (
            _nearest_candidates(e.inputs, producers, candidates) if producers else set())
        for owner in owners:
            harm[owner] = max(harm.get(owner, 0.0), e.local)
    return [n for n, _ in sorted(harm.items(), key=lambda kv: -kv[1])[:k]]


def _qdq_harm(reference: Path, graph, qdq_model: Path, feeds: list[dict]) -> dict[tuple[str, ...], float]:
    """Static QDQ only: the error each quantize/dequantize pair adds by itself.

    Uses onnxruntime's own matching of each activation before and after its QDQ pair, and of
    each float weight with its dequantized int8 copy. Returns {nodes to keep in fp32 to remove
    that pair: harm}, where harm is :func:`off_fraction` of the pair.
    """
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching, create_weight_matching

    with tempfile.TemporaryDirectory(prefix="edgeship-localize-") as tmp:
        acts = _activations(Path(qdq_model), feeds, Path(tmp))
    producer = {o: n.name for n in graph.node for o in n.output}
    relu_out = {o for n in graph.node if n.op_type == "Relu" for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    harm: dict[tuple[str, ...], float] = {}
    for tensor, m in create_activation_matching(acts).items():
        nodes = tuple(sorted(({producer[tensor]} if tensor in producer else set()) | set(consumers.get(tensor, []))))
        if nodes:
            # the quantizer folds a Relu into the QuantizeLinear after it: compare after the clamp
            pre = [np.maximum(a, 0) for a in m["pre_qdq"]] if tensor in relu_out else m["pre_qdq"]
            err = max(off_fraction(a, b) for a, b in zip(pre, m["post_qdq"]))
            harm[nodes] = max(harm.get(nodes, 0.0), err)
    for weight, m in create_weight_matching(str(reference), str(qdq_model)).items():
        nodes = tuple(sorted(consumers.get(weight, [])))
        if nodes:
            harm[nodes] = max(harm.get(nodes, 0.0), off_fraction(m["float"], m["dequantized"]))
    return harm


def explain(reference: Path, candidate: Path, feeds: list[dict], precision: str, tol) -> dict | None:
    """The first node where ``candidate`` leaves ``reference`` beyond ``tol``, with a hint.

    ``tol`` is a Tolerance (its min_cosine, else its atol, is applied to every intermediate
    tensor). Returns None when no intermediate tensor can be matched or none diverges.
    """
    try:
        errors = node_errors(reference, candidate, feeds)
    except Exception as e:  # localisation is best effort: the parity failure stands on its own
        log.info("divergence localisation failed: %s", e)
        return None
    min_cos = tol.min_cosine if tol.min_cosine is not None else (None if tol.atol is not None else 0.999)
    first = first_divergence(errors, min_cosine=min_cos, atol=tol.atol)
    if first is None:
        return None
    return {**first.to_dict(), "precision": precision, "hint": hint(first, precision, _is_qdq(candidate)),
            "compared_tensors": len(errors)}


def _is_qdq(path: Path) -> bool:
    """Whether a model is static QDQ int8 (QuantizeLinear nodes) rather than dynamic int8."""
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


def explain_models(reference: bytes, candidate: bytes, feeds: list[dict], precision: str, tol) -> dict | None:
    """:func:`explain` for two models held as bytes (a bundle's variants, compare's inputs).
    Needs the onnx package; returns None without it, since localisation is best effort, and for an
    ORT-format model (``--target mobile``'s ``.ort``: not an ONNX graph to mark outputs in)."""
    from edgeship.runtimes.ort_format import is_ort_format

    if is_ort_format(reference) or is_ort_format(candidate):
        log.info("an ORT-format model has no ONNX graph to locate the divergent node in; compare its .onnx source")
        return None
    try:
        import onnx  # noqa: F401 - the localiser edits graphs with it
    except ImportError:
        log.info("install onnx to locate the first divergent node")
        return None
    with tempfile.TemporaryDirectory(prefix="edgeship-explain-") as tmp:
        ref, cand = Path(tmp) / "reference.onnx", Path(tmp) / "candidate.onnx"
        ref.write_bytes(reference)
        cand.write_bytes(candidate)
        return explain(ref, cand, feeds, precision, tol)


def describe(d: dict) -> str:
    """One line for the console: node, op, error, hint."""
    what = (f"{d['nonfinite']} NaN/Inf values" if d["nonfinite"] else
            f"cosine {d['cosine']:.6f}, max abs {d['max_abs']:.3g}")
    return (f"first divergent node {d['node']} ({d['op_type']}) output {d['output']!r} from inputs "
            f"{', '.join(d['inputs'][:3])}{'...' if len(d['inputs']) > 3 else ''}: {what}; {d['hint']}")


def _fp16_overflows(graph, acts: dict[str, list[np.ndarray]]) -> list[NodeError]:
    """Nodes of the fp32 graph whose outputs exceed float16's range on the feeds, in order.

    onnxruntime on CPU computes many float16 ops in float32 (it inserts casts and removes
    cast pairs), so an fp16 variant can pass parity there and still overflow on a GPU; this
    reads the fp32 activations themselves.
    """
    out = []
    for node in graph.node:
        for o in node.output:
            if o in acts:
                peak = max(float(np.nanmax(np.abs(a))) if a.size else 0.0 for a in acts[o])
                if peak > FP16_MAX:
                    out.append(NodeError(node.name or o, node.op_type, o, tuple(node.input), math.inf, math.inf,
                                         0.0, math.inf, peak, 1))
                    break
    return out
