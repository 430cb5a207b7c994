"""What the profiler runs: a bundle or an .onnx file as a :class:`Source`, and its feeds per batch.

Inputs come from the bundle's golden sample 0 (``golden/inputs.npz``, keys ``0/<input>``),
repeated along the batch axis to each ``--batch`` size; other symbolic axes keep sample 0's
sizes. The batch axis is the axis named ``batch``, else a symbolic axis 0. A raw .onnx file
gets seeded random inputs with every other symbolic axis at 1. A model whose batch axis is
fixed runs only at that size. Torch-free.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.bundle.manifest import Candidate, VariantResult
from edgeship.errors import ModelLoadError, SpecError, brief
from edgeship.spec import IOSpec, check_numeric, format_shape, validate_feeds


@dataclass(frozen=True)
class Source:
    """What to profile: an IOSpec, variants by name (``model(name)`` gives bytes or a path),
    golden sample 0 when there is one, and the TorchScript module's bytes when there is one.

    A bundle also brings what its manifest records for the report's summary and parity
    sections: each variant's precision, size and parity (``variant_info``) and the default
    variant per target (``defaults``). A raw .onnx file has neither.
    """

    name: str
    kind: str
    path: str
    spec: IOSpec
    variants: tuple[str, ...]
    model: Callable[[str], bytes | str]
    sample: dict | None = None
    torchscript: Callable[[], bytes] | None = None
    recorded: dict = field(default_factory=dict)  # manifest["source"]: arch, arch_kwargs
    variant_info: dict[str, VariantResult] = field(default_factory=dict)  # manifest["variants"], parsed
    defaults: dict[str, str] = field(default_factory=dict)  # manifest["defaults"]: target -> variant
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)  # manifest["candidates"]: default first


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bundle (a folder, or a zip by content) rather than an ONNX file.

    Raises:
        ModelLoadError: it does not exist, or is a FIFO, device or socket (never opened for reading).
    """
    from edgeship.bundle.read import is_bundle as bundle_by_content

    return bundle_by_content(path, ModelLoadError)


def open_source(path: str | os.PathLike) -> Source:
    """A bundle (folder or zip, fully verified) or an ONNX file, recognised by content."""
    return _bundle_source(Path(path)) if is_bundle(path) else _onnx_source(Path(path))


def _bundle_source(p: Path) -> Source:
    from edgeship.bundle import open_bundle
    from edgeship.bundle.golden import read_bundle_npz
    from edgeship.bundle.manifest import candidates_of, variants_of

    b = open_bundle(p)
    m = b.manifest
    sample = None
    if (m.get("golden") or {}).get("inputs"):
        samples = read_bundle_npz(b, m["golden"]["inputs"])
        sample = samples[0] if samples else None
    ts = m.get("torchscript")
    return Source(m.get("name") or p.name, "bundle", str(p), IOSpec.from_dict(m["io"]), tuple(m["variants"]),
                  lambda v: b.read(m["variants"][v]["file"]), sample,
                  (lambda: b.read(ts)) if isinstance(ts, str) else None,
                  dict(m["source"]) if isinstance(m.get("source"), dict) else {}, variants_of(m),
                  dict(m.get("defaults") or {}), candidates_of(m))


def _onnx_source(p: Path) -> Source:
    from edgeship.bundle.inspect import onnx_for_session
    from edgeship.runtimes.ort import io_specs, open_session, session_options

    model = onnx_for_session(p)  # a regular file; external data checked before anything reads it
    try:
        s = open_session(model, options=session_options(1), error=ModelLoadError)
    except ModelLoadError as e:
        raise ModelLoadError(f"{p} is neither a bundle nor an ONNX model onnxruntime can open: {brief(e.__cause__ or e)}") from e
    inputs, outputs = io_specs(s)
    check_numeric(inputs, str(p))
    check_numeric(outputs, str(p), "output")
    return Source(p.stem, "onnx", str(p), IOSpec(inputs, outputs), ("onnx",), lambda v: model)


# ----------------------------------------------------------------------------- batch
def batch_symbol(spec: IOSpec) -> str | None:
    """The symbolic batch axis: one named ``batch``, else a symbolic axis 0."""
    if any(d == "batch" for t in spec.inputs for d in t.shape):
        return "batch"
    return next((t.shape[0] for t in spec.inputs if t.shape and isinstance(t.shape[0], str)), None)


def natural_batch(spec: IOSpec, sample: dict | None) -> int:
    """The batch size sample 0 has (1 without one), or the fixed axis 0 without a batch symbol."""
    sym = batch_symbol(spec)
    for t in spec.inputs:
        for ax, d in enumerate(t.shape):
            if sym is not None and d == sym and sample is not None and t.name in sample:
                return int(sample[t.name].shape[ax])
    if sym is None:
        return next((d for t in spec.inputs for d in t.shape[:1] if isinstance(d, int)), 1)
    return 1


MAX_FEED_BYTES = 1 << 30


def _check_feed_bytes(src: Source, batch: int) -> None:
    """Refuse a --batch whose feeds would take over :data:`MAX_FEED_BYTES`, before allocating."""
    sym, sample = batch_symbol(src.spec), src.sample or {}
    total = 0
    for t in src.spec.inputs:
        given = sample.get(t.name)
        dims = [batch if d == sym else (int(given.shape[ax]) if given is not None and isinstance(d, str) else
                                        d if isinstance(d, int) else 1) for ax, d in enumerate(t.shape)]
        itemsize = np.dtype(t.dtype).itemsize if t.dtype != "bfloat16" else 2
        total += math.prod(dims) * itemsize
    if total > MAX_FEED_BYTES:
        raise SpecError(f"--batch {batch}: the feeds of {src.name} would take {total / 2**30:.1f} GiB, over the "
                        f"{MAX_FEED_BYTES >> 30} GiB the profiler allocates; use a smaller --batch.")


def batch_feeds(src: Source, batch: int) -> dict[str, np.ndarray]:
    """Feeds at ``batch``: sample 0 repeated along the batch axis, or seeded random inputs."""
    spec, sample = src.spec, src.sample
    sym = batch_symbol(spec)
    _check_feed_bytes(src, batch)
    if sym is None:
        fixed = natural_batch(spec, sample)
        if batch != fixed:
            ins = ", ".join(f"{t.name}: {t.dtype}{format_shape(t.shape)}" for t in spec.inputs)
            raise SpecError(f"{src.name} has a fixed batch axis ({ins}), so --batch {batch} cannot run; profile "
                            f"--batch {fixed}, or re-export with --dynamic-batch (or --dynamic NAME:0=batch).")
    if sample is None:
        from edgeship.bundle.golden import random_feeds

        sizes = {d: 1 for t in spec.inputs for d in t.shape if isinstance(d, str)}
        if sym is not None:
            sizes[sym] = batch
        feeds = random_feeds(spec.inputs, sizes, np.random.default_rng(0))
    else:
        feeds = {}
        for t in spec.inputs:
            a = sample[t.name]
            for ax, d in enumerate(t.shape):
                if d == sym and a.shape[ax] != batch:
                    a = np.take(a, np.arange(batch) % a.shape[ax], axis=ax)
            feeds[t.name] = np.ascontiguousarray(a)
    validate_feeds(spec.inputs, feeds)
    return feeds
