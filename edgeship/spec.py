"""Tensor and I/O specs: names, dtypes and shapes with symbolic dims.

``parse_input("x:1x3x224x224")`` and ``parse_input("ids:1x128:int64")`` read the CLI's
``--input NAME:SHAPE[:DTYPE]`` syntax; ``parse_dynamic("ids:1=seq")`` reads ``--dynamic
NAME:AXIS[=SYMBOL]``. Shapes hold ints for fixed axes and strings for symbolic ones.
Only numpy is imported here: the runtime uses these classes to validate feeds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from edgeship.errors import SpecError

INPUT_SYNTAX = "NAME:SHAPE[:DTYPE], e.g. --input x:1x3x224x224 or --input ids:1x128:int64"
DYNAMIC_SYNTAX = "NAME:AXIS[=SYMBOL], e.g. --dynamic ids:1=seq"
SUPPORTED_DTYPES = (
    "float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")  # always fullmatch: "$" would accept a trailing newline
MAX_RANK = 32
MAX_ELEMENTS = 1 << 28  # per --input tensor: 1 GiB of float32, before any sample is allocated

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: ``shape`` holds ints (fixed) or strings (symbolic axes)."""

    name: str
    dtype: str = "float32"
    shape: tuple[Dim, ...] = ()

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def with_dynamic(self, axis: int, symbol: str) -> TensorSpec:
        if not -len(self.shape) <= axis < len(self.shape):
            raise SpecError(
                f"--dynamic {self.name}:{axis} asks for axis {axis}, but input {self.name!r} has "
                f"rank {len(self.shape)} (shape {format_shape(self.shape)}); use an axis from 0 to "
                f"{len(self.shape) - 1}."
            )
        shape = list(self.shape)
        shape[axis % len(shape)] = symbol
        return replace(self, shape=tuple(shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        try:
            shape = tuple(d["shape"])
            if not all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in shape):
                raise TypeError("shape entries must be ints or strings")
            return cls(name=str(d["name"]), dtype=check_dtype(str(d["dtype"])), shape=shape)
        except (KeyError, TypeError) as e:
            raise SpecError(f"malformed tensor spec {d!r}: {e}") from e


@dataclass(frozen=True)
class IOSpec:
    """The inputs and outputs of a model, in call order."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: dict) -> IOSpec:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in d.get("inputs", [])),
            outputs=tuple(TensorSpec.from_dict(t) for t in d.get("outputs", [])),
        )


def format_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_dtype(dtype: str) -> str:
    if dtype not in SUPPORTED_DTYPES:
        raise SpecError(f"unsupported dtype {dtype!r}; use one of {', '.join(SUPPORTED_DTYPES)}.")
    return dtype


def numeric(dtype: str) -> bool:
    """Whether edgeship can make, feed and compare tensors of ``dtype``: numpy's bool, integer and
    float types, and bfloat16; not strings, float8, complex, sequences, maps or optionals (which
    onnxruntime names ``tensor(string)``, ``seq(tensor(float))``...)."""
    if dtype == "bfloat16":
        return True
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:
        return False


def check_numeric(specs, what: str, kind: str = "input") -> None:
    """Refuse a model whose inputs (or outputs) edgeship cannot make or compare.

    Raises:
        SpecError: naming the tensor and its type.
    """
    for t in specs:
        if not numeric(t.dtype):
            raise SpecError(
                f"{what}: {kind} {t.name!r} has type {t.dtype}, which edgeship cannot "
                f"{'generate or feed' if kind == 'input' else 'compare'}: "
                "it works with tensors of bool, integer and float types (float16, bfloat16, float32, float64). "
                "Wrap the model so that its inputs and outputs are such tensors.")


def check_name(name: str, what: str = "input") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(
            f"{what} name {name!r} is not valid: use letters, digits, '_', '.', '-' or '/', "
            "starting with a letter or '_'."
        )
    return name


def parse_input(text: str) -> TensorSpec:
    """Parse ``NAME:SHAPE[:DTYPE]`` (``x:1x3x224x224``, ``ids:1x128:int64``, ``s:scalar``)."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise SpecError(f"cannot read input spec {text!r}: expected {INPUT_SYNTAX}.")
    name = check_name(parts[0])
    dtype = check_dtype(parts[2]) if len(parts) == 3 else "float32"
    if parts[1] == "scalar":
        return TensorSpec(name, dtype, ())
    dims = []
    for piece in parts[1].lower().split("x"):
        if not (piece.isascii() and piece.isdigit()) or int(piece) <= 0:
            raise SpecError(
                f"cannot read shape {parts[1]!r} of input {name!r}: each axis must be a positive "
                f"integer, separated by 'x' ({INPUT_SYNTAX}); mark symbolic axes with --dynamic."
            )
        dims.append(int(piece))
        if len(dims) > MAX_RANK:
            raise SpecError(f"input {name!r} has more than {MAX_RANK} axes; numpy and onnxruntime take at most that many.")
    if math.prod(dims) > MAX_ELEMENTS:
        raise SpecError(
            f"input {name!r} of shape {parts[1]} has {math.prod(dims):,} elements, over the {MAX_ELEMENTS:,} "
            "edgeship allocates per example input; export at a smaller size and mark the axes --dynamic."
        )
    return TensorSpec(name, dtype, tuple(dims))


def parse_dynamic(text: str) -> tuple[str, int, str]:
    """Parse ``NAME:AXIS[=SYMBOL]`` into (name, axis, symbol)."""
    m = re.fullmatch(r"([^:=]+):(-?\d+)(?:=([A-Za-z_][A-Za-z0-9_]*))?", text.strip())
    if not m:
        raise SpecError(f"cannot read dynamic axis {text!r}: expected {DYNAMIC_SYNTAX}.")
    name, axis, symbol = check_name(m.group(1)), int(m.group(2)), m.group(3)
    return name, axis, symbol or f"{name}_dim{axis}"


def apply_dynamic(inputs: tuple[TensorSpec, ...], dynamic: list[str], dynamic_batch: bool):
    """Mark symbolic axes on ``inputs`` from ``--dynamic`` entries and ``--dynamic-batch``."""
    by_name = {t.name: t for t in inputs}
    if dynamic_batch:
        for name, t in by_name.items():
            if not t.shape:
                raise SpecError(f"--dynamic-batch needs a batch axis, but input {name!r} is a scalar.")
            by_name[name] = t.with_dynamic(0, "batch")
    for entry in dynamic:
        name, axis, symbol = parse_dynamic(entry)
        if name not in by_name:
            raise SpecError(
                f"--dynamic {entry} names input {name!r}, but the model's inputs are "
                f"{', '.join(by_name) or '(none)'}."
            )
        by_name[name] = by_name[name].with_dynamic(axis, symbol)
    return tuple(by_name[t.name] for t in inputs)


def concrete_shape(spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)



def validate_feeds(specs: tuple[TensorSpec, ...], feeds: dict) -> None:
    """Check names, dtypes, ranks and fixed axes of ``feeds`` against ``specs``.

    Raises:
        SpecError: naming the input, what was expected and what was given.
    """
    if len(feeds) != len(specs) or any(s.name not in feeds for s in specs):
        expected = ", ".join(f"{s.name}: {s.dtype}{format_shape(s.shape)}" for s in specs)
        missing = [s.name for s in specs if s.name not in feeds]
        extra = [k for k in feeds if k not in {s.name for s in specs}]
        wrong = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                      f"unexpected {', '.join(map(str, extra))}" if extra else "") if x)
        raise SpecError(f"feeds do not match the model's inputs ({wrong}); the model expects {expected}.")
    for s in specs:
        a = feeds[s.name]
        if not isinstance(a, np.ndarray):
            raise SpecError(
                f"input {s.name!r} must be a numpy.ndarray of {s.dtype}{format_shape(s.shape)}; "
                f"got {type(a).__name__}. Convert it with numpy.asarray(value, dtype='{s.dtype}')."
            )
        if a.dtype.name != s.dtype or not a.dtype.isnative:
            got = a.dtype.name if a.dtype.isnative else f"{a.dtype.name} in non-native byte order ({a.dtype.str})"
            raise SpecError(
                f"input {s.name!r} expects dtype {s.dtype}, got {got} "
                f"(shape {format_shape(a.shape)}); convert it with .astype('{s.dtype}')."
            )
        if a.ndim != len(s.shape) or any(
            isinstance(d, int) and d != g for d, g in zip(s.shape, a.shape)
        ):
            raise SpecError(
                f"input {s.name!r} expects shape {format_shape(s.shape)}, got "
                f"{format_shape(a.shape)} (named axes may take any size)."
            )
