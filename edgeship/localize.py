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
    rel_err: float      # ||ref - got|| / ||ref||
    cosine: float
    local: float        # rel_err minus the worst rel_err of the node's inputs
    ref_max: float      # max |ref|, for range hints
    nonfinite: int      # NaN/Inf in the candidate where the reference is finite

    def to_dict(self) -> dict:
        return asdict(self)


def _activations(model_path: Path, feeds: list[dict], workdir: Path) -> dict[str, list[np.ndarray]]:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, modify_model_output_intermediate_tensors,
    )

    aug = workdir / f"{model_path.stem}.all_outputs.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(aug))
    return collect_activations(str(aug), feeds)


def node_errors(reference: Path, candidate: Path, feeds: list[dict]) -> list[NodeError]:
    """Per-node errors of ``candidate`` against ``reference``, in topological order."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgeship-localize-") as tmp:
        ref = _activations(Path(reference), feeds, Path(tmp))
        got = _activations(Path(candidate), feeds, Path(tmp))
    graph = onnx.load(str(reference), load_external_data=False).graph
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
            finite = np.isfinite(r)
            nonfinite = int(np.count_nonzero(finite & ~np.isfinite(g)))
            g_safe = np.where(np.isfinite(g), g, 0.0)
            r_safe = np.where(finite, r, 0.0)
            diff = r_safe - g_safe
            nr = float(np.linalg.norm(r_safe))
            rel[out] = float(np.linalg.norm(diff) / nr) if nr else float(np.linalg.norm(diff) > 0)
            ng = float(np.linalg.norm(g_safe))
            cos = 1.0 if nr == ng == 0 else (float(r_safe @ g_safe / (nr * ng)) if nr and ng else 0.0)
            upstream = max((rel.get(i, 0.0) for i in node.input), default=0.0)
            errors.append(NodeError(
                node.name or out, node.op_type, out, tuple(node.input),
                float(np.abs(diff).max()) if diff.size else 0.0, rel[out], cos,
                rel[out] - upstream, float(np.abs(r_safe).max()) if r.size else 0.0, nonfinite,
            ))
    return errors


def hint(e: NodeError, precision: str) -> str:
    """A likely cause, from the node's op type and numbers."""
    if e.nonfinite and (precision == "fp16" or e.ref_max > FP16_MAX):
        return (f"fp16 overflow: the reference reaches {e.ref_max:.3g}, beyond float16's {FP16_MAX:.0f}; "
                "keep this node in fp32 (or rescale the activations)")
    if precision == "fp16" and e.ref_max > FP16_MAX / 4:
        return f"fp16 range: the reference reaches {e.ref_max:.3g}, close to float16's limit of {FP16_MAX:.0f}"
    if e.nonfinite:
        return "NaN/Inf appear here although the reference is finite"
    if e.op_type == "Resize":
        return "Resize: check the interpolation mode and coordinate_transformation_mode the exporter chose"
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


def harmful_nodes(errors: list[NodeError], candidates: set[str], k: int) -> list[NodeError]:
    """The ``k`` nodes among ``candidates`` that add the most error themselves."""
    ranked = sorted((e for e in errors if e.node in candidates and e.local > 0), key=lambda e: -e.local)
    seen, out = set(), []
    for e in ranked:
        if e.node not in seen:
            seen.add(e.node)
            out.append(e)
        if len(out) == k:
            break
    return out
