"""Tolerances: defaults per precision, scoped overrides per output, and their parsing.

Scopes, from weakest to strongest: ``fp32`` (a precision), ``*/logits`` (an output in every
precision), ``int8/logits`` (an output in one precision). Values come from the built-in
defaults, then the project's config file, then the command line.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgeship.config import ExportConfig
from edgeship.errors import SpecError


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria; ``None`` means the criterion is not applied."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None
    max_outlier_frac: float | None = None
    atol_scale: float | None = None  # atol is at least this fraction of the output's largest |reference| value
    # decoder LMs' generation gate (edgeship.parity.generation; its defaults live there)
    min_agreement: float | None = None  # teacher-forced next-token agreement, pooled over the golden prompts
    max_logprob_delta: float | None = None  # mean |Δ log p| of the golden tokens, in nats

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


DEFAULT_TOLERANCES = {
    # atol_scale: float32 rounding grows with the magnitudes an output is computed from; 1e-5 of the
    # largest value (~100 float32 ulps) keeps elements near 0 of a large output (pixel-space boxes at
    # the image's edge) from failing on it, and is 100x tighter than what rtol allows that largest value
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, max_outlier_frac=0.0, atol_scale=1e-5),
    "fp16": Tolerance(min_cosine=0.999),
    "bf16": Tolerance(min_cosine=0.999),  # OpenVINO's bf16 inference precision on an fp32 file
    "int8": Tolerance(min_cosine=0.99, min_top1=0.99),
    # weight-only int4 (block-wise MatMulNBits): the weights' error is about 16x int8's; activations stay fp32
    "int4": Tolerance(min_cosine=0.98, min_top1=0.95),
}


TOLERANCE_KEYS = ("atol", "rtol", "min_cosine", "min_top1", "max_outlier_frac", "atol_scale", "min_agreement",
                  "max_logprob_delta")
TOLERANCE_SYNTAX = "[PRECISION[/OUTPUT]:|*/OUTPUT:]KEY=VALUE, e.g. int8/logits:min_top1=0.98 or fp32:atol=1e-3"


def tolerance_for(precision: str) -> Tolerance:
    """The default tolerance of a precision (fp32's for an unknown one)."""
    return DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])


@dataclass(frozen=True)
class Tolerances:
    """Per precision and per output tolerances: defaults, then scoped overrides.

    Scopes, from weakest to strongest: ``fp32`` (a precision), ``*/logits`` (an output in every
    precision), ``int8/logits`` (an output in one precision). Values come from the built-in
    defaults, then the project's config file, then the command line.
    """

    overrides: dict = field(default_factory=dict)  # scope -> {key: value}

    def get(self, precision: str, output: str) -> Tolerance:
        return self.apply(tolerance_for(precision), precision, output)

    def apply(self, tol: Tolerance, precision: str, output: str) -> Tolerance:
        """``tol`` with this set's overrides for (precision, output) on top."""
        for scope in (precision, f"*/{output}", f"{precision}/{output}"):
            if scope in self.overrides:
                tol = replace(tol, **self.overrides[scope])
        return tol

    def for_precision(self, precision: str):
        """A callable output -> Tolerance, for :func:`run_parity`."""
        return lambda output: self.get(precision, output)

    def merged(self, other: Tolerances | dict) -> Tolerances:
        """``other`` wins where both set a key."""
        extra = other.overrides if isinstance(other, Tolerances) else other
        out = {k: dict(v) for k, v in self.overrides.items()}
        for scope, values in extra.items():
            out.setdefault(scope, {}).update(values)
        return Tolerances(out)

    @classmethod
    def from_dict(cls, data: dict, where: str = "tolerances") -> Tolerances:
        if not isinstance(data, dict):
            raise SpecError(f"{where} must be a table of scopes (fp32, int8/logits, */embedding, ...).")
        out = {}
        for scope, values in data.items():
            _check_scope(scope, where)
            if not isinstance(values, dict):
                raise SpecError(f"{where}.{scope} must be a table of {', '.join(TOLERANCE_KEYS)}.")
            out[scope] = {k: _check_value(k, v, f"{where}.{scope}") for k, v in values.items()}
        return cls(out)


def _check_scope(scope: str, where: str) -> None:
    precision, _, output = scope.partition("/")
    if precision not in (*DEFAULT_TOLERANCES, "*") or (precision == "*" and not output):
        raise SpecError(f"{where}: scope {scope!r} must be a precision ({', '.join(DEFAULT_TOLERANCES)}), "
                        "PRECISION/OUTPUT or */OUTPUT.")


def _check_value(key: str, value, where: str) -> float:
    if key not in TOLERANCE_KEYS:
        raise SpecError(f"{where}: unknown tolerance {key!r}; use {', '.join(TOLERANCE_KEYS)}.")
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{where}: {key} must be a number, got {value!r}.") from e
    if not math.isfinite(v) or v < 0 or (key.startswith("min_") or key in ("max_outlier_frac", "atol_scale")) and v > 1:
        raise SpecError(f"{where}: {key}={value!r} is out of range (must be ≥ 0{', ≤ 1' if key != 'atol' and key != 'rtol' else ''}).")
    return v


def parse_tolerance(text: str) -> tuple[str, str, float]:
    """``int8/logits:min_top1=0.98`` -> ("int8/logits", "min_top1", 0.98); no scope means every precision."""
    scope, sep, rest = text.rpartition(":")
    key, eq, value = rest.partition("=")
    if not eq or not key:
        raise SpecError(f"cannot read --tolerance {text!r}: expected {TOLERANCE_SYNTAX}.")
    key = key.strip()
    if sep:
        _check_scope(scope, "--tolerance")
    return (scope if sep else "*"), key, _check_value(key, value.strip(), "--tolerance")


def tolerances_from_options(items: list[str]) -> dict:
    """Repeated --tolerance options as a scope -> {key: value} dict (``*`` = every precision)."""
    out: dict = {}
    for item in items:
        scope, key, value = parse_tolerance(item)
        scopes = list(DEFAULT_TOLERANCES) if scope == "*" else [scope]
        for sc in scopes:
            out.setdefault(sc, {})[key] = value
    return out


def project_tolerances(folder: Path | None = None) -> tuple[dict, str | None]:
    """Tolerances from ``edgeship.toml`` ([tolerances]) or ``pyproject.toml`` ([tool.edgeship.tolerances])
    in ``folder`` (default: the current directory). Returns (scope -> values, the file it came from).

    Raises:
        SpecError: the file is not valid TOML (nested too deeply included), cannot be read, is over
            16 MiB, or the table is malformed.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib

    folder = Path(folder or Path.cwd())
    for name, keys in (("edgeship.toml", ("tolerances",)), ("pyproject.toml", ("tool", "edgeship", "tolerances"))):
        path = folder / name
        if not path.is_file():
            continue
        from edgeship.bundle.limits import MAX_MANIFEST_BYTES, open_regular

        with open_regular(path, f"the project file {path}", SpecError) as f:  # no FIFO, no endless device
            try:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
            except OSError as e:
                raise SpecError(f"the project file {path}: cannot read it ({e.strerror or e}).") from e
        if len(raw) > MAX_MANIFEST_BYTES:
            raise SpecError(f"{path} is over {MAX_MANIFEST_BYTES >> 20} MiB; edgeship reads project files of at most that.")
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SpecError(f"{path} is not valid TOML: {e}") from e
        except RecursionError as e:
            raise SpecError(f"{path} nests its arrays or tables too deeply for a TOML reader; edgeship reads "
                            f"[{'.'.join(keys)}] from it: flatten the file, or run from another folder.") from e
        for k in keys:
            data = data.get(k) if isinstance(data, dict) else None
        if data is not None:
            where = f"{path.name} [{'.'.join(keys)}]"
            return Tolerances.from_dict(data, where).overrides, str(path)
    return {}, None


def effective_tolerances(config: ExportConfig) -> Tolerances:
    """An export's tolerances: defaults, ``config.tolerances`` (config file, then --tolerance),
    and --atol/--rtol for fp32 last."""
    fp32 = {k: v for k, v in (("atol", config.atol), ("rtol", config.rtol)) if v is not None}
    return Tolerances.from_dict(config.tolerances).merged({"fp32": fp32} if fp32 else {})
