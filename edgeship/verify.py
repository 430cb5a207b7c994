"""``edgeship check``: re-check a bundle's variants against its golden outputs.

Needs onnxruntime and numpy only; ``against=model.pt`` also re-runs the PyTorch model on the
golden inputs (and needs torch).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from edgeship.bundle import open_bundle
from edgeship.errors import BundleError
from edgeship.golden import Sample, load_npz_samples
from edgeship.parity import TOLERANCE_KEYS, ParityReport, Tolerance, Tolerances, run_parity, tolerance_for
from edgeship.runtimes.ort import OrtRunner
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)


def _npz(bundle, rel: str) -> list[dict]:
    try:
        with np.load(io.BytesIO(bundle.read(rel)), allow_pickle=False) as data:
            return load_npz_samples(data)
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"bundle {bundle.path}: {rel} is not a readable .npz ({e}).") from e


def check(bundle: str | os.PathLike, targets: tuple[str, ...] = ("cpu",), variants: tuple[str, ...] = (),
          against: str | os.PathLike | None = None, load_options=None,
          tolerances: dict | None = None) -> ParityReport:
    """Run every (or the named) variant on every target over the golden inputs.

    Args:
        bundle: the bundle folder or zip.
        targets: onnxruntime targets (``cpu``, ``cuda``, a provider name).
        variants: variant names; empty means all of them.
        against: a model file to re-run with PyTorch as the reference too.
        load_options: ``LoadOptions`` for ``against`` (default: the bundle's recorded ``--arch``).
        tolerances: scoped overrides, e.g. ``{"fp32": {"atol": 1e-3}, "int8/logits": {"min_top1": 0.95}}``;
            they win over the tolerances recorded in the bundle.

    Raises:
        BundleError: the bundle is corrupt or tampered with.
        TargetUnavailableError: a target's provider is not installed.
    """
    b = open_bundle(bundle)
    m = b.manifest
    spec = IOSpec.from_dict(m["io"])
    inputs = _npz(b, m["golden"]["inputs"])
    outputs = _npz(b, m["golden"]["outputs"])
    if len(inputs) != len(outputs) or not inputs:
        raise BundleError(f"bundle {b.path}: golden inputs and outputs do not pair up.")
    labels = [s.get("label", str(i)) for i, s in enumerate(m["golden"].get("samples", []))]
    labels += [str(i) for i in range(len(labels), len(inputs))]
    sizes = [s.get("sizes", {}) for s in m["golden"].get("samples", [])] + [{}] * len(inputs)
    samples = [Sample(labels[i], feeds, sizes[i]) for i, feeds in enumerate(inputs)]
    names = list(variants) or list(m["variants"])
    overrides = Tolerances.from_dict(tolerances or {})
    report = ParityReport(())
    if against is not None:
        report = report.merged(_check_reference(b, spec, samples, outputs, against, load_options))
    for name in names:
        if name not in m["variants"]:
            raise BundleError(f"variant {name!r} is not in bundle {b.path}; it has {', '.join(m['variants'])}.")
        v = m["variants"][name]
        tol = _tolerance(v, overrides)
        data = b.read(v["file"])
        runners = [OrtRunner(spec, data, target=t, name=f"onnxruntime-{t}") for t in targets]
        report = report.merged(run_parity(runners, samples, outputs, tol, name))
        for r in runners:
            r.close()
    return report


def _tolerance(variant: dict, overrides: Tolerances):
    """Per output: the tolerance the bundle was exported with, then the caller's overrides."""
    precision = variant.get("precision", "fp32")
    stored = variant.get("tolerance") or {}

    def tol_of(output: str) -> Tolerance:
        values = stored.get(output) if isinstance(stored.get(output), dict) else None
        base = Tolerance(**{k: v for k, v in values.items() if k in TOLERANCE_KEYS}) if values else tolerance_for(precision)
        return overrides.apply(base, precision, output)

    return tol_of


def _check_reference(b, spec, samples, outputs, against, load_options) -> ParityReport:
    """Re-run the PyTorch model on the golden inputs and compare with the stored outputs."""
    from edgeship.exporters.loading import LoadOptions, load_model
    from edgeship.runtimes.torch_eager import TorchEagerRunner

    if load_options is None:
        src = b.manifest.get("source") or {}
        load_options = LoadOptions(arch=src.get("arch"), arch_kwargs=src.get("arch_kwargs") or {})
    loaded = load_model(Path(against), load_options)
    if loaded.module is None:
        raise BundleError(f"--against {against} is an ONNX file; pass the PyTorch model the bundle came from.")
    runner = TorchEagerRunner(spec, loaded.module, name="torch-eager")
    return run_parity([runner], samples, outputs, tolerance_for("fp32"), "reference")
