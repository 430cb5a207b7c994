"""Parity metrics: how one candidate output compares with its reference. Numpy only.

Metrics: max abs, max rel, mean abs, cosine similarity, SNR (dB), top-1 agreement (for
``[batch, classes]`` score outputs), the output's scale (its largest finite |reference| value)
and the fraction of elements outside ``atol + rtol * |ref|``, where atol is raised to
``atol_scale * scale`` when the tolerance sets one (fp32's default does: 1e-5).

Non-finite values are never hidden: ``nonfinite_ref`` counts the NaN/Inf elements of the
reference (shown in the table, JSON and JUnit), a candidate NaN/Inf where the reference has
another value fails (``nonfinite_mismatch``), and a reference with any NaN fails, since NaN
matching NaN proves nothing (usually NaN/Inf golden inputs, or a model that makes NaN on them).
Matching infinities (e.g. -inf in masked logits) pass.
"""

from __future__ import annotations

import math

import numpy as np

from edgeship.parity.tolerances import Tolerance


def is_score_vector(ref: np.ndarray) -> bool:
    """A ``[batch, classes]`` float output whose rows are not unit vectors: logits or scores,
    where top-1 agreement means something (an L2-normalised embedding is not one)."""
    if ref.ndim != 2 or ref.shape[1] < 2 or ref.dtype.kind != "f":
        return False
    norms = np.linalg.norm(ref.astype(np.float64), axis=1)
    return not np.allclose(norms, 1.0, atol=1e-3)


def metrics(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> dict:
    """Compare two arrays of the same shape; all figures as plain floats."""
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    finite = np.isfinite(r) & np.isfinite(g)
    nonfinite_mismatch = int(np.count_nonzero(~finite & ~((r == g) | (np.isnan(r) & np.isnan(g)))))
    diff = np.abs(np.where(finite, r, 0.0) - np.where(finite, g, 0.0))  # no inf - inf warnings
    out = {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "max_rel": float((diff / np.maximum(np.abs(np.where(finite, r, 0)), 1e-12)).max()) if diff.size else 0.0,
        "nonfinite_mismatch": nonfinite_mismatch,
        "nonfinite_ref": int(np.count_nonzero(~np.isfinite(r))),
        "nan_ref": int(np.count_nonzero(np.isnan(r))),
    }
    rf, gf = np.where(finite, r, 0).ravel(), np.where(finite, g, 0).ravel()
    nr, ng = float(np.linalg.norm(rf)), float(np.linalg.norm(gf))
    out["cosine"] = 1.0 if nr == ng == 0 else (float(rf @ gf / (nr * ng)) if nr and ng else 0.0)
    noise = float(np.sum((rf - gf) ** 2))
    out["snr_db"] = math.inf if noise == 0 else (10 * math.log10(float(np.sum(rf**2)) / noise) if nr else -math.inf)
    if is_score_vector(ref):
        out["top1"] = float(np.mean(r.argmax(1) == g.argmax(1)))
    out["scale"] = float(np.abs(np.where(finite, r, 0.0)).max()) if r.size else 0.0
    atol = effective_atol(tol, out["scale"])
    rtol = tol.rtol if tol.rtol is not None else 1e-3
    outside = (diff > atol + rtol * np.abs(np.where(finite, r, 0))) | (~finite & (r != g))
    out["outlier_frac"] = float(outside.mean()) if outside.size else 0.0
    return out


def effective_atol(tol: Tolerance, scale: float) -> float:
    """``tol.atol``, raised to ``tol.atol_scale`` times the output's largest |reference| value."""
    atol = tol.atol if tol.atol is not None else 1e-4
    return max(atol, tol.atol_scale * scale) if tol.atol_scale else atol


def judge(m: dict, tol: Tolerance) -> str | None:
    """Return why ``m`` misses ``tol``, or None when it passes."""
    if m.get("nan_ref"):
        return (f"the reference has {m['nan_ref']} NaN value(s), which prove nothing about the candidate "
                "(NaN/Inf in the golden inputs, or a model that makes NaN on them); use finite inputs "
                "in the model's domain (--example-inputs)")
    if m.get("nonfinite_mismatch"):
        return f"{m['nonfinite_mismatch']} NaN/Inf values that the reference does not have"
    if tol.max_outlier_frac is not None and m["outlier_frac"] > tol.max_outlier_frac:
        atol = effective_atol(tol, m.get("scale", 0.0))
        rtol = tol.rtol if tol.rtol is not None else 1e-3  # what metrics() applied
        raised = (f" (atol_scale={tol.atol_scale:g} × max |ref| {m['scale']:.4g})"
                  if tol.atol_scale and atol > (tol.atol if tol.atol is not None else 1e-4) else "")
        return (f"{m['outlier_frac']:.2%} of elements outside atol={atol:.3g}{raised} + rtol={rtol:g}·|ref| "
                f"(max abs {m['max_abs']:.3g}, allowed fraction {tol.max_outlier_frac:.2%})")
    if tol.min_cosine is not None and m["cosine"] < tol.min_cosine:
        return f"cosine {m['cosine']:.6f} < {tol.min_cosine}"
    if tol.min_top1 is not None and "top1" in m and m["top1"] < tol.min_top1:
        return f"top-1 agreement {m['top1']:.3f} < {tol.min_top1}"
    return None
