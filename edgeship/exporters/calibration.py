"""Calibration data for static int8: real data from files or code, or loudly synthetic.

``--calibration`` takes:

- an ``.npz`` with one array per input name, each with a leading sample axis
  (``x: [N, 1, 3, 224, 224]``); an array of the input's own rank is split along axis 0
  into batch-1 samples (``x: [N, 3, 224, 224]``);
- a folder of ``.npz`` files (one feed dict each) or, for one-input models, ``.npy`` files;
- ``module:function`` (or ``file.py:function``) returning an iterable of feed dicts.

Every sample is checked against the model's inputs (names, dtypes, ranks, fixed axes) before
calibration starts; a bad one stops the export with the input named and nothing written.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.bundle.golden import MAX_SAMPLE_BYTES, base_sizes, check_generated, random_feeds
from edgeship.bundle.limits import read_npy, read_npz
from edgeship.errors import SpecError
from edgeship.spec import TensorSpec, format_shape, validate_feeds

SYNTHETIC_WARNING = (
    "static int8 was calibrated on synthetic random inputs: its accuracy was NOT measured on real "
    "data. Pass --calibration with a few hundred real samples before shipping it."
)


@dataclass(frozen=True)
class Calibration:
    """The samples and where they came from (recorded in report.json)."""

    samples: tuple
    source: str
    synthetic: bool

    def to_dict(self) -> dict:
        d = {"source": self.source, "samples": len(self.samples), "synthetic": self.synthetic}
        if self.synthetic:
            d["warning"] = SYNTHETIC_WARNING
        return d


def load_calibration(source: str | Path | None, inputs: tuple[TensorSpec, ...], limit: int = 64,
                     seed: int = 0, example: dict | None = None, flag: str = "--calibration") -> Calibration:
    """Read and validate up to ``limit`` calibration samples (``flag``: the option that named them,
    for messages: ``--eval-data`` reads held-out data the same way).

    Raises:
        SpecError: missing/empty source, or a sample whose names, dtypes or shapes do not fit.
    """
    if limit < 1:
        raise SpecError(f"{flag}-samples must be at least 1, got {limit}.")
    if source is None:
        rng = np.random.default_rng(seed + 1000)
        sizes = base_sizes(inputs, example)
        # synthetic samples, at most 2 GiB of them together (a raw .onnx can declare large inputs)
        count = max(1, min(limit, 32, MAX_SAMPLE_BYTES // max(check_generated(inputs, sizes), 1)))
        samples = tuple(random_feeds(inputs, sizes, rng, example) for _ in range(count))
        return Calibration(samples, "synthetic", True)
    text = str(source)
    path = Path(text)
    rows: list[dict]
    if path.is_dir():
        rows = _from_folder(path, inputs, limit, flag)
    elif path.suffix == ".npz" or path.is_file():
        rows = _from_npz(path, inputs, limit, flag)
    elif ":" in text:
        rows = _from_function(text, limit, flag)
    else:
        raise SpecError(f"{flag} {text}: no such file or folder, and not a module:function.")
    if not rows:
        raise SpecError(f"{flag} {text} holds no samples; give at least one.")
    for i, feeds in enumerate(rows):
        try:
            validate_feeds(inputs, feeds)
        except SpecError as e:
            raise SpecError(f"{flag.removeprefix('--').replace('-', ' ')} sample {i} from {text}: {e}") from e
    return Calibration(tuple(rows), text, False)


def _from_npz(path: Path, inputs, limit: int, flag: str) -> list[dict]:
    arrays = read_npz(path, f"{flag} {path}", SpecError)
    names = [t.name for t in inputs]
    if set(arrays) != set(names):
        raise SpecError(
            f"{flag} {path} has arrays {sorted(arrays)}, but the model's inputs are {names}; "
            "name each array after its input."
        )
    per_input = {}
    for t in inputs:
        a = arrays[t.name]
        if a.ndim == len(t.shape) + 1:
            per_input[t.name] = list(a)
        elif a.ndim == len(t.shape) and len(t.shape) > 0:
            per_input[t.name] = [a[i:i + 1] for i in range(a.shape[0])]
        else:
            raise SpecError(
                f"{flag} {path}: input {t.name!r} expects {t.dtype}{format_shape(t.shape)} per "
                f"sample, so an array of rank {len(t.shape) + 1} (a leading sample axis); got "
                f"{a.dtype}{format_shape(a.shape)}."
            )
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise SpecError(f"{flag} {path}: inputs have different sample counts {sorted(counts)}.")
    n = min(counts.pop(), limit)
    return [{k: np.ascontiguousarray(v[i]) for k, v in per_input.items()} for i in range(n)]


def _from_folder(path: Path, inputs, limit: int, flag: str) -> list[dict]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
    if not files:
        raise SpecError(f"{flag} {path} is an empty folder (no .npz or .npy files).")
    samples = []
    for f in files[:limit]:
        try:
            if f.suffix == ".npy":
                if len(inputs) != 1:
                    raise SpecError(
                        f"{flag} {f}: .npy files only fit one-input models; this one takes "
                        f"{', '.join(t.name for t in inputs)}: use .npz files with one array per input."
                    )
                samples.append({inputs[0].name: read_npy(f, f"{flag} {f}", SpecError)})
            else:
                samples.append(read_npz(f, f"{flag} {f}", SpecError))
        except SpecError:
            raise
        except Exception as e:
            raise SpecError(f"{flag} {f}: cannot read it ({e}).") from e
    return samples


def _from_function(spec: str, limit: int, flag: str) -> list[dict]:
    from edgeship.exporters.usercode import import_callable

    fn = import_callable(spec, flag, SpecError)
    attr = spec.rpartition(":")[2]
    try:
        samples = list(itertools.islice(iter(fn()), limit))
    except Exception as e:
        raise SpecError(f"{flag} {spec}: calling {attr}() failed: {e}") from e
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise SpecError(f"{flag} {spec}: item {i} is a {type(s).__name__}, not a dict of arrays by input name.")
    return samples
