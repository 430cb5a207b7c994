"""Golden files: the bundle's reference inputs and outputs, and the seeded samples they start as.

Golden inputs: seeded samples from the spec, every dynamic axis at two sizes.

Sample 0 is the example (the user's ``--example-inputs`` or seeded data at the spec's sizes),
sample 1 is more data at the same sizes, and the last sample puts every symbolic axis at a
second size, so a trace that specialised an axis cannot pass.

With ``--example-inputs`` every sample is derived from that real data (rows resampled along
the batch axis, other symbolic axes cropped or tiled to the second size), so quantized
variants are judged on the data's own distribution, not on noise. Without it, samples are
seeded random: floats standard normal, integers in ``[0, 2)`` (valid for ids, masks and token
types alike).

Generated inputs are bounded before anything is allocated (:func:`check_generated`), whatever the
shapes come from (``--input``, a raw .onnx's declared shapes, a second size): at most
:data:`~edgeship.spec.MAX_ELEMENTS` (2^28) elements per input, as ``--input`` allows, and
:data:`MAX_SAMPLE_BYTES` (2 GiB) for one sample's inputs together.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeship.errors import BundleError, SpecError
from edgeship.spec import MAX_ELEMENTS, TensorSpec, check_numeric, concrete_shape, format_shape

if TYPE_CHECKING:
    from edgeship.bundle.read import Bundle

DEFAULT_SEED = 0
MAX_SAMPLE_BYTES = 2 << 30  # one input of 2^28 elements of 8 bytes


@dataclass(frozen=True)
class Sample:
    """One set of feeds and the sizes its symbolic axes took."""

    label: str
    feeds: dict
    sizes: dict

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sizes.items()) or "fixed shapes"


def describe_sample(label: str) -> str:
    """What a sample label means (the legend of ``example``, ``seed0-1``, ``dynamic-batch2``...)."""
    kind, _, rest = label.partition("-")
    if label == "example":
        return "the example inputs given to the export (--example-inputs)"
    if kind.startswith("seed") and kind[4:].isdigit() and rest.isdigit():
        return f"seeded random data (seed {kind[4:]}, sample {rest}) at the example's sizes"
    if kind == "resampled" and rest.isdigit():
        return f"rows resampled from the example inputs (sample {rest})"
    if kind == "dynamic":
        sizes = ", ".join(re.sub(r"^(.*?)(\d+)$", r"\1=\2", part) for part in rest.split("-"))
        return f"every dynamic axis at a second size ({sizes}), so a size the trace fixed fails"
    if kind == "inputs" and rest.isdigit():
        return f"the given --inputs file, sample {rest}"
    if kind == "row" and rest.isdigit():
        return f"row {rest} of the first golden sample, judged on its own"
    if kind == "eval" and rest.isdigit():
        return f"held-out sample {rest} (--eval-data or --eval-split; not stored in the bundle)"
    if kind == "golden" and rest.isdigit():
        return f"the bundle's golden input {rest}"
    if kind == "prompt" and rest.isdigit():
        return f"a decoder's golden prompt {rest}: greedy generation against the eager model's tokens and step logits"
    if label == "teacher-forced":
        return "a decoder's golden prompts with the eager model's tokens, in one prefill call (next-token agreement)"
    if label in ("prefill", "decode"):
        return f"a decoder's {label} step on the first golden prompt" + (" (past of length 0)" if label == "prefill" else "")
    return "a sample of the bundle's golden inputs"


def legend(labels) -> str:
    """One line naming what each label means, in order of first appearance."""
    return "; ".join(f"{label} = {describe_sample(label)}" for label in dict.fromkeys(labels))


def second_size(size: int) -> int:
    return size * 2 if size <= 4 else size // 2


def base_sizes(specs: tuple[TensorSpec, ...], example: dict | None, given: dict | None = None) -> dict[str, int]:
    """The size each symbol takes: from the example, else ``given`` (the --input sizes), else 1."""
    sizes: dict[str, int] = {}
    for s in specs:
        for axis, sym in s.dynamic_axes.items():
            if example is not None and s.name in example:
                sizes.setdefault(sym, int(example[s.name].shape[axis]))
            else:
                sizes.setdefault(sym, (given or {}).get(sym, 1))
    return sizes


def second_sizes(sizes: dict[str, int], ranges: dict[str, tuple[int, int]] | None = None) -> dict[str, int]:
    """A second size per symbol, with distinct (first, second) pairs so outputs map back to symbols,
    inside each symbol's (lower, upper) range where one is given (an ExportedProgram's own)."""
    used, alt = set(), {}
    for k, v in sizes.items():
        lo, hi = (ranges or {}).get(k, (1, 2**31 - 1))
        a = second_size(v)
        if not lo <= a <= hi:
            a = v + 1 if v + 1 <= hi else max(lo, v - 1)
        while (v, a) in used and a + 1 <= hi:
            a += 1
        used.add((v, a))
        alt[k] = a
    return alt


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def check_generated(specs, sizes: dict) -> int:
    """Refuse inputs too large to generate, before allocating them: an input of more than
    :data:`~edgeship.spec.MAX_ELEMENTS` elements, or a sample over :data:`MAX_SAMPLE_BYTES`.
    Returns the bytes one sample takes.

    Raises:
        SpecError: naming the input, its shape (and the symbols' sizes) and the limit.
    """
    check_numeric(specs, "generated inputs")
    total = 0
    for s in specs:
        shape = concrete_shape(s, sizes)
        n = math.prod(shape)
        if n > MAX_ELEMENTS or any(d < 0 for d in shape):
            at = ", ".join(f"symbol {d}={sizes[d]}" for d in dict.fromkeys(s.shape) if isinstance(d, str))
            raise SpecError(
                f"input {s.name!r} would be generated as {s.dtype}{format_shape(shape)}{f' (at {at})' if at else ''}: "
                f"{n:,} elements, over the {MAX_ELEMENTS:,} (2^28) edgeship generates per input, as for --input. "
                "Pass inputs of your own (compare --inputs, export --example-inputs), or a model whose declared shapes "
                "are smaller or symbolic.")
        total += n * _itemsize(s.dtype)
    if total > MAX_SAMPLE_BYTES:
        raise SpecError(
            f"the inputs {', '.join(repr(s.name) for s in specs)} would take {total / 2**30:.1f} GiB together, over the "
            f"{MAX_SAMPLE_BYTES / 2**30:.1f} GiB edgeship generates per sample. Pass inputs of your own (compare "
            "--inputs, export --example-inputs), or a model whose declared shapes are smaller or symbolic.")
    return total


def random_feeds(specs, sizes: dict, rng: np.random.Generator, like: dict | None = None) -> dict:
    """Seeded random feeds; integers within the range seen in ``like`` (else ``[0, 2)``).

    Raises:
        SpecError: the inputs are too large to generate (:func:`check_generated`).
    """
    check_generated(specs, sizes)
    feeds = {}
    for s in specs:
        shape = concrete_shape(s, sizes)
        dtype = np.dtype(s.dtype) if s.dtype != "bfloat16" else np.dtype("float32")
        if dtype.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[s.name] = rng.random(shape) < 0.5
        else:
            lo, hi = 0, 1
            if like is not None and s.name in like and like[s.name].size:
                lo, hi = int(like[s.name].min()), int(like[s.name].max())
            feeds[s.name] = rng.integers(lo, hi + 1, size=shape).astype(dtype)
    return feeds


def make_samples(specs: tuple[TensorSpec, ...], example: dict | None = None,
                 seed: int = DEFAULT_SEED, count: int = 2, sizes: dict | None = None,
                 ranges: dict[str, tuple[int, int]] | None = None) -> list[Sample]:
    """Build ``count`` samples at the example's sizes plus one at second sizes when dynamic.

    ``sizes`` gives each symbol's first size where there is no example (from ``--input``);
    ``ranges`` bounds each symbol's second size.
    """
    rng = np.random.default_rng(seed)
    sizes = base_sizes(specs, example, sizes)
    samples = []
    if example is not None:
        samples.append(Sample("example", dict(example), sizes))
    while len(samples) < count:
        feeds = (resample(specs, example, sizes, sizes, rng) if example is not None
                 else random_feeds(specs, sizes, rng))
        samples.append(Sample(f"{'resampled' if example is not None else 'seed' + str(seed)}-{len(samples)}", feeds, sizes))
    if sizes:
        alt = second_sizes(sizes, ranges)
        feeds = resample(specs, example, sizes, alt, rng) if example is not None else random_feeds(specs, alt, rng)
        samples.append(Sample("dynamic-" + "-".join(f"{k}{v}" for k, v in alt.items()), feeds, alt))
    return samples


def resample(specs, example: dict, sizes: dict, new: dict, rng: np.random.Generator) -> dict:
    """New feeds from the example's own values: batch rows drawn at random (shared by all inputs,
    so ids and masks stay paired), other symbolic axes cropped or tiled to their new size."""
    feeds = {}
    rows = None
    for s in specs:
        a = example[s.name]
        for axis, sym in s.dynamic_axes.items():
            n_old, n_new = a.shape[axis], new[sym]
            if axis == 0:
                if rows is None or len(rows) != n_new:
                    rows = rng.permutation(n_old)[:n_new] if n_new <= n_old else rng.integers(0, n_old, n_new)
                idx = rows % n_old
            else:
                idx = np.arange(n_new) % n_old
            a = np.take(a, idx, axis=axis)
        if not s.dynamic_axes and a.ndim and a.shape[0] > 1:
            a = a[rng.permutation(a.shape[0])]
        feeds[s.name] = np.ascontiguousarray(a)
    return feeds


def save_samples(path, samples: list[Sample], arrays_of) -> None:
    """Write ``{i}/{name}`` keys for each sample's arrays (``arrays_of(sample)``) to an npz."""
    data = {f"{i}/{k}": v for i, s in enumerate(samples) for k, v in arrays_of(s).items()}
    with open(path, "wb") as f:
        np.savez(f, **data)


def npz_arrays(data) -> dict:
    """The arrays of an opened .npz. numpy hands back raw ``bytes`` for a member that is not an
    .npy file; refuse those.

    Raises:
        ValueError: naming the member that is not an array.
    """
    out = {}
    for key in data.files:
        value = data[key]
        if not isinstance(value, np.ndarray):
            raise ValueError(f"member {key!r} is not a numpy array")
        out[key] = value
    return out


def load_npz_samples(data) -> list[dict]:
    """Inverse of :func:`save_samples`: a list of dicts, one per sample index. ``data`` is an
    opened .npz or a dict of its arrays."""
    out: dict[int, dict] = {}
    for key, value in (data if isinstance(data, dict) else npz_arrays(data)).items():
        i, _, name = key.partition("/")
        out.setdefault(int(i), {})[name] = value
    return [out[i] for i in sorted(out)]


def read_bundle_npz(bundle: Bundle, rel: str) -> list[dict]:
    """The samples of a golden .npz inside a verified bundle (array sizes checked before reading:
    see ``bundle.limits``)."""
    from edgeship.bundle.limits import read_npz

    arrays = read_npz(bundle.read(rel), f"bundle {bundle.path}: {rel}", BundleError)
    try:
        return load_npz_samples(arrays)
    except ValueError as e:  # a key that is not <i>/<name>
        raise BundleError(f"bundle {bundle.path}: {rel} is not a readable .npz of golden samples ({e}).") from e
