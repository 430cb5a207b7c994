"""Held-out data for the parity gates, and the margin each variant passed them by.

The golden samples start from the example (``--example-inputs``) and are resampled from its own
rows, so a quantized variant judged on them alone is judged on the data it was built for: an
int8 all-MiniLM-L6-v2 passed at cosine 0.9935 on its 16 example sentences (one batch) and
measured 0.969 on short sentences it had not seen. Held-out samples come from:

- ``--eval-data DATA`` (the formats of ``--calibration``: an .npz of arrays of the inputs' own rank
  is split into batch-1 samples, so each one is judged on its own, not averaged into a batch);
- else a split of ``--calibration`` (``--eval-split 0.25``, from 4 samples up): static int8
  calibrates on the rest, and dynamic int8 and fp16 never see calibration data.

Without either, a quantized claim is still judged on more than the example as one batch: where
every input's axis 0 is one dynamic (batch) symbol, each row of the first golden sample is also
a sample of its own (up to 64), so the gate is the worst example, not the batch's average (the
cosine of a flattened batch of 16 MiniLM embeddings was 0.9935 where its worst row was 0.9922).

Every variant (fp32 included) must pass its tolerance on them as well as on the golden samples;
the eager reference runs on each. They are not stored in the bundle (a held-out set can be
large, and it is the user's data), so ``check`` re-checks the golden samples only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgeship.bundle.golden import Sample
from edgeship.errors import EdgeshipError, SpecError, brief
from edgeship.parity.report import ParityReport
from edgeship.parity.tolerances import Tolerance
from edgeship.pipeline.context import Context
from edgeship.spec import TensorSpec

MIN_SPLIT = 4  # calibration samples needed before a share of them is held out
MAX_ROWS = 64  # rows of the first golden sample judged each on its own
FEW = 32  # fewer held-out samples than this: the margin says how few
GATED = (("min_cosine", "cosine", "cosine"), ("min_top1", "top1", "top-1 agreement"))
Reference = Callable[[dict, tuple[TensorSpec, ...]], list[tuple[str, np.ndarray]]]


def load_held_out(ctx: Context, reference: Reference, inputs: tuple[TensorSpec, ...], names: list[str]) -> None:
    """Read the held-out samples (``--eval-data``, else a split of ``--calibration``), run the
    reference on each, and add them to ``ctx.eval_samples``/``ctx.eval_references``; a split also
    sets ``ctx.calibration`` to the samples left for calibrating.

    Raises:
        SpecError: unreadable data, a sample that does not fit the inputs, or one the reference
            cannot run.
    """
    from edgeship.exporters.calibration import Calibration, load_calibration

    cfg = ctx.config
    if cfg.eval_data is not None:
        rows = load_calibration(cfg.eval_data, inputs, cfg.eval_samples, cfg.seed, flag="--eval-data").samples
        ctx.eval_source = f"--eval-data {cfg.eval_data}"
    elif cfg.calibration is not None and cfg.eval_split > 0:
        calib = load_calibration(cfg.calibration, inputs, cfg.calibration_samples, cfg.seed)
        n = len(calib.samples)
        held = min(math.ceil(n * cfg.eval_split), n - 1) if n >= MIN_SPLIT else 0
        if not held:
            ctx.note(f"--calibration {cfg.calibration}: {n} sample(s), too few to hold any out for the parity gates "
                     f"(--eval-split needs {MIN_SPLIT}); quantized variants are judged on the golden samples only")
            return
        ctx.calibration = Calibration(calib.samples[:n - held], calib.source, False)
        rows = calib.samples[n - held:][:cfg.eval_samples]
        ctx.eval_source = f"the last {held} of {n} --calibration samples (--eval-split {cfg.eval_split:g})"
    else:
        return
    samples, refs = [], []
    for i, feeds in enumerate(rows):
        feeds = {t.name: feeds[t.name] for t in inputs}
        try:
            pairs = reference(feeds, inputs)
        except EdgeshipError:
            raise
        except Exception as e:
            raise SpecError(f"{ctx.eval_source}: the model cannot run on held-out sample {i}: {brief(e)}; "
                            "check that it fits the inputs (names, dtypes, shapes).") from e
        if len(pairs) != len(names):
            raise SpecError(f"{ctx.eval_source}: on held-out sample {i} the model returns {len(pairs)} outputs, "
                            f"on the example {len(names)}.")
        sizes = {sym: int(feeds[t.name].shape[axis]) for t in inputs for axis, sym in t.dynamic_axes.items()}
        samples.append(Sample(f"eval-{i}", feeds, sizes))
        refs.append(dict(zip(names, (a for _, a in pairs))))
    ctx.eval_samples, ctx.eval_references = samples, refs


def add_rows(ctx: Context, reference: Reference, inputs: tuple[TensorSpec, ...], names: list[str]) -> None:
    """Each row of the first golden sample as a sample of its own (``row-<i>``, batch 1, up to
    ``MAX_ROWS``) for the gates of quantized variants, where all inputs share a dynamic axis 0;
    nothing otherwise (a fixed batch cannot be split)."""
    if all(q == "fp32" for q in ctx.config.quantize) or not inputs:
        return
    batch = {t.dynamic_axes.get(0) for t in inputs}
    sym = next(iter(batch))
    first = ctx.samples[0]
    if len(batch) != 1 or sym is None or first.sizes.get(sym, 1) < 2:
        return
    samples, refs = [], []
    for i in range(min(first.sizes[sym], MAX_ROWS)):
        feeds = {t.name: first.feeds[t.name][i:i + 1] for t in inputs}
        try:
            pairs = reference(feeds, inputs)
        except EdgeshipError:
            raise
        except Exception as e:  # a model that cannot run on one row: judge the batch only
            ctx.note(f"rows of the example are not judged on their own: the model fails on one row ({brief(e)})")
            return
        samples.append(Sample(f"row-{i}", feeds, {**first.sizes, sym: 1}))
        refs.append(dict(zip(names, (a for _, a in pairs))))
    ctx.row_samples, ctx.row_references = samples, refs


def gate_margins(report: ParityReport, variant: str, tol_of: Callable[[str], Tolerance],
                 held_out: set[str]) -> dict:
    """The worst cosine and top-1 agreement of ``variant`` over the golden and over the held-out
    samples, each with its margin over the tolerance (negative: missed). Returns {"golden" |
    "held_out": {"samples": n, "cosine": {"worst": x, "threshold": t, "margin": x - t}, ...}}."""
    out: dict = {}
    for c in report.checks:
        if c.variant != variant or not c.metrics:
            continue
        group = out.setdefault("held_out" if c.sample in held_out else "golden", {"samples": set()})
        group["samples"].add(c.sample)
        tol = tol_of(c.output)
        for key, metric, _ in GATED:
            threshold = getattr(tol, key)
            if threshold is None or metric not in c.metrics:
                continue
            worst = min(group.get(metric, {}).get("worst", math.inf), float(c.metrics[metric]))
            group[metric] = {"worst": worst, "threshold": threshold, "margin": worst - threshold}
    for group in out.values():
        group["rows"] = sum(label.startswith("row-") for label in group["samples"])
        group["samples"] = len(group["samples"])
    return out


def margin_text(variant: str, margins: dict, source: str | None) -> str | None:
    """One line: how far ``variant`` passed (or missed) its gate on the golden and the held-out
    samples; None where its tolerance gates neither cosine nor top-1 (fp32)."""
    parts = []
    for group, label in (("golden", "golden"), ("held_out", "held-out")):
        g = margins.get(group)
        if not g:
            continue
        figures = [f"{name} {g[metric]['worst']:.5f} (margin {g[metric]['margin']:+.4f} over {g[metric]['threshold']:g})"
                   for _, metric, name in GATED if metric in g]
        rows = f", {g['rows']} of them the first one's rows each on its own" if g.get("rows") else ""
        if figures:
            parts.append(f"{', '.join(figures)} on {g['samples']} {label} sample(s){rows}")
    if not parts:
        return None
    text = f"{variant}: " + "; ".join(parts)
    held = margins.get("held_out")
    if not held:
        text += ("; judged on the golden samples only (what `check` re-runs, all derived from the example): pass --eval-data "
                 f"with held-out inputs (at least {FEW}) for a claim that generalises")
    else:
        text += f" ({source})" + (f"; {held['samples']} held-out samples are few: the margin is a rough one"
                                  if held["samples"] < FEW else "")
    return text
