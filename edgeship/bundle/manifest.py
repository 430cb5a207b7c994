"""manifest.json: parsing and the schema of every field the readers use."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from edgeship.bundle.layout import MANIFEST, SCHEMA_VERSION, check_relpath
from edgeship.errors import BundleError

FORMATS = ("onnx", "ort")  # a variant's model format: ONNX, or ONNX Runtime Mobile's ORT format


@dataclass(frozen=True)
class VariantResult:
    """One shipped variant as manifest.json records it: written by the package stage, read by
    ``edgeship.load``, ``check``, ``compare``, ``inspect`` and the profiler.

    JSON shape (schema 1): ``{"file", "precision", "size", "parity": {"passed": {target: bool},
    "max_abs", "min_cosine"}, "tolerance": {output: {criterion: value}}, "latency_ms": {target: ms},
    "excluded_nodes", "error_before_fallback", "error_after_fallback"}`` (the last three only
    after an accuracy fallback), and ``"format": "ort", "source"`` for an ORT-format twin (``--target mobile``).
    """

    name: str
    file: str
    precision: str = "fp32"
    size: int = 0
    passed: dict[str, bool] = field(default_factory=dict)
    max_abs: float | None = None
    min_cosine: float | None = None
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    excluded_nodes: tuple[str, ...] = ()
    error_before_fallback: dict | None = None
    error_after_fallback: dict | None = None
    format: str = "onnx"  # or "ort" (ONNX Runtime Mobile's format), with ``source`` the variant it was converted from
    source: str | None = None

    def to_dict(self) -> dict:
        d: dict = {"file": self.file, "precision": self.precision, "size": self.size,
                   "parity": {"passed": dict(self.passed), "max_abs": self.max_abs, "min_cosine": self.min_cosine},
                   "tolerance": self.tolerance, "latency_ms": self.latency_ms}
        if self.format != "onnx":
            d.update(format=self.format, source=self.source)
        if self.excluded_nodes:
            d.update(excluded_nodes=list(self.excluded_nodes), error_before_fallback=self.error_before_fallback,
                     error_after_fallback=self.error_after_fallback)
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict) -> VariantResult:
        """From a manifest entry that :func:`parse_manifest` has checked (missing fields take defaults)."""
        parity = _table(d.get("parity"))
        excluded = d.get("excluded_nodes")
        return cls(name=name, file=d["file"], precision=d.get("precision", "fp32"), size=int(_number(d.get("size")) or 0),
                   passed={t: ok for t, ok in _table(parity.get("passed")).items() if isinstance(ok, bool)},
                   max_abs=_number(parity.get("max_abs")), min_cosine=_number(parity.get("min_cosine")),
                   tolerance=_table(d.get("tolerance")),
                   latency_ms={t: ms for t, ms in _table(d.get("latency_ms")).items() if _number(ms) is not None},
                   excluded_nodes=tuple(n for n in excluded if isinstance(n, str)) if isinstance(excluded, list) else (),
                   error_before_fallback=_table(d.get("error_before_fallback")) or None,
                   error_after_fallback=_table(d.get("error_after_fallback")) or None,
                   format=d.get("format", "onnx"), source=d["source"] if isinstance(d.get("source"), str) else None)


@dataclass(frozen=True)
class Candidate:
    """One configuration a target can run a bundle with: a runtime, a shipped variant (its model
    file), a precision class and the runtime's options, with what selection measured of it.
    The manifest lists them per target, fastest first (``candidates``: {target: [...]});
    ``edgeship.load`` takes the first whose runtime is installed.

    JSON shape: ``{"id", "runtime", "variant", "precision", "options": {...}, "p50_ms",
    "parity": {"passed", "max_abs", "min_cosine"}, "requires": {"runtime", "cpu_any", "providers"}}``
    (``requires``: what it needs of a host, :func:`edgeship.runtimes.registry.requirements`;
    ``options.threads`` is 1 or ``cores/N``, resolved on the host that runs it).
    """

    id: str
    runtime: str
    variant: str
    precision: str = "fp32"
    options: dict = field(default_factory=dict)
    p50_ms: float | None = None
    passed: bool = True
    max_abs: float | None = None
    min_cosine: float | None = None
    requires: dict = field(default_factory=dict)
    unmeasured: str | None = None  # why the last tune could not measure it there (kept for other hosts)

    def to_dict(self) -> dict:
        d = {"id": self.id, "runtime": self.runtime, "variant": self.variant, "precision": self.precision,
             "options": dict(self.options), "p50_ms": self.p50_ms,
             "parity": {"passed": self.passed, "max_abs": self.max_abs, "min_cosine": self.min_cosine},
             "requires": dict(self.requires)}
        if self.unmeasured:
            d["unmeasured"] = self.unmeasured
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        """From a manifest entry that :func:`parse_manifest` has checked (informational fields of
        another type become None)."""
        parity = _table(d.get("parity"))
        return cls(id=d["id"], runtime=d["runtime"], variant=d["variant"], precision=d.get("precision", "fp32"),
                   options=dict(_table(d.get("options"))), p50_ms=_number(d.get("p50_ms")),
                   passed=parity.get("passed") is not False, max_abs=_number(parity.get("max_abs")),
                   min_cosine=_number(parity.get("min_cosine")), requires=dict(_table(d.get("requires"))),
                   unmeasured=d["unmeasured"][:500] if isinstance(d.get("unmeasured"), str) else None)

    @property
    def plain(self) -> bool:
        """The variant on onnxruntime's default session options."""
        return self.runtime == "onnxruntime" and not self.options

    def describe(self) -> str:
        opts = options_text(self.options)
        at = f" at {self.precision}" if self.runtime != "onnxruntime" and self.precision != "fp32" else ""
        return f"{self.variant} on {self.runtime}{at}" + (f" ({opts})" if opts else "")


def options_text(options: dict, leave_out: tuple[str, ...] = ()) -> str:
    """A candidate's runtime options in words, ``spinning=off threads=1`` ("" for none)."""
    return " ".join(f"{k}={('on' if v else 'off') if isinstance(v, bool) else v}"
                    for k, v in sorted(options.items()) if k not in leave_out)


def candidates_of(manifest: dict) -> dict[str, list[Candidate]]:
    """Per target, the manifest's candidates in its order; {} for a bundle written before them."""
    table = manifest.get("candidates") or {}
    return {t: [Candidate.from_dict(c) for c in cs] for t, cs in table.items()}


def _table(value: object) -> dict:
    """A JSON object from an unverified field, or {} (the informational fields of a crafted
    manifest never reach code that would fail on another type)."""
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def variants_of(manifest: dict) -> dict[str, VariantResult]:
    """The manifest's variants, by name, in the order it lists them."""
    return {n: VariantResult.from_dict(n, v) for n, v in manifest["variants"].items()}


def parse_manifest(data: bytes, where: Path) -> dict:
    """Parse manifest.json and check the schema of every field the readers use.

    Raises:
        BundleError: not JSON, an unknown schema version, or a field of the wrong shape.
    """
    try:
        manifest = json.loads(data, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"bundle {where}: manifest.json is not valid JSON ({str(e)[:200]}); the bundle is corrupt.") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {where}: manifest.json is not a JSON object.")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {where}: schema_version {version!r} is not supported (this edgeship reads "
            f"{SCHEMA_VERSION}); upgrade edgeship or re-export the bundle."
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"bundle {where}: manifest.json lists no files.")
    for rel, meta in files.items():
        check_relpath(rel)
        if rel == MANIFEST or not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or not isinstance(meta.get("size"), int) or isinstance(meta.get("size"), bool) or meta["size"] < 0:
            raise BundleError(f"bundle {where}: manifest entry {rel!r} is malformed.")
    _check_fields(manifest, where)
    return manifest


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refusing a repeated key (``schema_version`` twice: which one did you mean?)."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {repeated[:60]!r} appears twice in one object")
    return dict(pairs)


def _check_fields(m: dict, where: Path) -> None:
    """The io, variants, defaults and golden fields, as the runtime and ``check`` read them."""
    from edgeship.errors import SpecError
    from edgeship.spec import IOSpec

    def bad(what: str) -> NoReturn:
        raise BundleError(f"bundle {where}: manifest.json {what}; the bundle is corrupt or was edited.")

    def listed(rel, what: str) -> None:
        if not isinstance(rel, str) or rel not in m["files"]:
            bad(f"{what} names {rel!r}, which is not among its listed files")

    io = m.get("io")
    if not isinstance(io, dict) or not all(isinstance(io.get(k), list) for k in ("inputs", "outputs")) \
            or not all(isinstance(t, dict) for k in ("inputs", "outputs") for t in io[k]):
        bad("has no valid 'io' (inputs and outputs lists)")
    try:
        IOSpec.from_dict(io)
    except SpecError as e:
        bad(f"'io' is malformed: {e}")
    variants = m.get("variants")
    if not isinstance(variants, dict) or not variants:
        bad("lists no variants")
    for name, v in variants.items():
        if not isinstance(v, dict):
            bad(f"variant {name!r} is not an object")
        listed(v.get("file"), f"variant {name!r}")
        if not isinstance(v.get("precision", "fp32"), str):
            bad(f"variant {name!r} has a malformed precision")
        if v.get("format", "onnx") not in FORMATS:
            bad(f"variant {name!r} has format {str(v.get('format'))[:40]!r}; this edgeship reads {', '.join(FORMATS)}")
        tol = v.get("tolerance") or {}  # output -> {criterion: number}
        if not isinstance(tol, dict) or not all(
                isinstance(per, dict) and all(
                    x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))
                    for x in per.values())
                for per in tol.values()):
            bad(f"variant {name!r} has a malformed tolerance")
    defaults = m.get("defaults") or {}
    if not isinstance(defaults, dict) or not all(isinstance(v, str) and v in variants for v in defaults.values()):
        bad("'defaults' names a variant it does not have")
    _check_candidates(m.get("candidates"), variants, bad)
    mobile = m.get("mobile")
    if mobile is not None:
        if not isinstance(mobile, dict):
            bad("has a malformed 'mobile' section")
        listed(mobile.get("operators_config"), "the mobile operator config")
        names = mobile.get("variants", [])
        if not isinstance(names, list) or not all(
                isinstance(n, str) and isinstance(variants.get(n), dict) and variants[n].get("format") == "ort" for n in names):
            bad("'mobile' names variants that are not ORT-format variants of the bundle")
    tuned = m.get("tuned")
    if tuned is not None and not isinstance(tuned, dict):
        bad("has a malformed 'tuned' record")
    selection = m.get("selection")
    if selection is not None and not (isinstance(selection, dict) and all(isinstance(v, dict) for v in selection.values())):
        bad("has a malformed 'selection' record")
    golden = m.get("golden")
    if not isinstance(golden, dict):
        bad("has no 'golden' section")
    listed(golden.get("inputs"), "golden inputs")
    listed(golden.get("outputs"), "golden outputs")
    samples = golden.get("samples", [])
    if not isinstance(samples, list) or not all(
            isinstance(x, dict) and isinstance(x.get("label", ""), str) and isinstance(x.get("sizes", {}), dict)
            for x in samples):
        bad("has malformed golden samples")
    if not isinstance(m.get("name", ""), str):
        bad("has a name that is not a string")
    if "task" in m or "preprocess" in m:  # a Hugging Face folder's task metadata, tokenizer and image constants
        from edgeship.hf.preprocess import check_preprocess

        try:
            check_preprocess(m, [t["name"] for t in io["inputs"]])
        except BundleError as e:
            bad(re.sub(r"[;.] [Tt]he bundle is corrupt or was edited\.$", "", str(e).removeprefix("manifest.json ")).rstrip("."))


MAX_CANDIDATES = 256  # per target: far more than selection ever writes


def _check_candidates(table: object, variants: dict, bad: Callable[[str], NoReturn]) -> None:
    """``candidates``: {target: [candidate, ...]}, each naming a shipped variant, a known runtime
    and options that runtime accepts; absent in bundles written before candidates existed."""
    from edgeship.errors import SpecError
    from edgeship.runtimes.registry import check_options

    if table is None:
        return
    if not isinstance(table, dict):
        bad("has malformed 'candidates' (expected target -> list)")
    for target, cands in table.items():
        if not isinstance(cands, list) or len(cands) > MAX_CANDIDATES:
            bad(f"candidates for {target!r} are not a list of at most {MAX_CANDIDATES}")
        ids = set()
        for c in cands:
            if not isinstance(c, dict) or not all(isinstance(c.get(k), str) and c.get(k) for k in ("id", "runtime", "variant")) \
                    or not isinstance(c.get("precision", "fp32"), str) or len(c["id"]) > 200:
                bad(f"has a malformed candidate for {target!r}")
            if c["id"] in ids:
                bad(f"lists candidate {c['id'][:60]!r} twice for {target!r}")
            ids.add(c["id"])
            if c["variant"] not in variants:
                bad(f"candidate {c['id'][:60]!r} names variant {c['variant'][:60]!r}, which it does not have")
            try:
                check_options(c["runtime"], c.get("options", {}))
            except SpecError as e:
                bad(f"candidate {c['id'][:60]!r}: {e}")
            req = c.get("requires", {})
            if not isinstance(req, dict) or not isinstance(req.get("runtime", ""), str) or not all(
                    isinstance(req.get(k, []), list) and all(isinstance(x, str) for x in req.get(k, []))
                    for k in ("cpu_any", "providers")):
                bad(f"candidate {c['id'][:60]!r} has malformed 'requires'")
            if "cache_dir" in c.get("options", {}):  # a bundle never names a folder for edgeship to write in
                bad(f"candidate {c['id'][:60]!r} names a cache folder; a bundle may not choose where files are written")
            p50 = c.get("p50_ms")
            if p50 is not None and (not isinstance(p50, (int, float)) or isinstance(p50, bool) or not math.isfinite(p50) or p50 < 0):
                bad(f"candidate {c['id'][:60]!r} has a malformed p50_ms")
