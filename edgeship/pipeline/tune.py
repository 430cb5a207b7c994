"""``edgeship tune BUNDLE``: re-run candidate selection on the device the bundle will run on.

The bundle is verified, every candidate (each variant on onnxruntime's defaults, onnxruntime's
session options, OpenVINO where installed, and whatever the manifest already lists) is parity-checked
here on the golden samples with the bundle's own tolerances, the ones that pass are timed side by
side, and the manifest's ``defaults`` and ordered ``candidates`` are rewritten with the host they
were measured on (``tuned``). The bundle is rebuilt from its verified files with
:func:`~edgeship.bundle.write.write_bundle` (new hashes, atomic: the path holds the old bundle or
the new one), so it still verifies.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeship.bundle.choose import why_not_here
from edgeship.bundle.manifest import Candidate, candidates_of, variants_of
from edgeship.bundle.read import Bundle, open_bundle
from edgeship.bundle.write import write_bundle
from edgeship.errors import BundleError, DiskFullError, SpecError
from edgeship.host import host_info
from edgeship.parity.check import golden_samples, variant_tolerance
from edgeship.parity.evaluate import vacuous_outputs
from edgeship.parity.tolerances import tolerance_for
from edgeship.pipeline import workdir
from edgeship.pipeline.package import tool_versions
from edgeship.pipeline.select import parity_check, rank, selection_record
from edgeship.pipeline.workdir import work_folder
from edgeship.profiling import interleave
from edgeship.runtimes.ort import MOBILE, providers_for
from edgeship.runtimes.registry import CandidateConfig, candidate_configs
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` did: the bundle written, per target the candidates before and after (default
    first), the timing noise measured and the margin it set for lossy candidates (``selection``),
    and in words what changed and why."""

    bundle: Path
    before: dict[str, list[Candidate]]
    after: dict[str, list[Candidate]]
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    host: dict = field(default_factory=dict)
    selection: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "changes": self.changes, "notes": self.notes, "host": self.host,
                "selection": self.selection,
                "before": {t: [c.to_dict() for c in cs] for t, cs in self.before.items()},
                "after": {t: [c.to_dict() for c in cs] for t, cs in self.after.items()}}


def tune(bundle: str | os.PathLike, output: str | os.PathLike | None = None, targets: tuple[str, ...] = ("cpu",),
         runtimes: tuple[str, ...] | None = None) -> TuneResult:
    """Re-measure ``bundle``'s candidates on this machine and rewrite its defaults.

    Args:
        output: write the tuned bundle here (a folder, or ``.zip``) and leave ``bundle`` as it is;
            default: replace ``bundle`` itself, atomically.
        targets: the targets to tune (their providers must be installed here).
        runtimes: only these runtimes (default: every installed one).

    Raises:
        BundleError: the bundle is corrupt or tampered with, or nothing passes parity on a target.
        TargetUnavailableError: a target's provider is not installed here.
        DiskFullError: TMPDIR has no room for the copy of the bundle tune rewrites from.
    """
    b = open_bundle(bundle)
    m = b.manifest
    spec = IOSpec.from_dict(m["io"])
    samples, references = golden_samples(b, spec)
    variants = variants_of(m)
    before = candidates_of(m)
    vacuous = bool(vacuous_outputs(references, lambda o: tolerance_for("fp32")))
    notes: list[str] = []
    after: dict[str, list[Candidate]] = {}
    selection: dict[str, dict] = {}
    if MOBILE in targets:
        raise SpecError("tune --target mobile: the mobile target's default is the smallest passing ORT-format file, not "
                        "the fastest here (this machine is not the phone; docs/mobile.md); tune cpu or cuda, and pick the "
                        "mobile variant in the app.")
    for t in targets:
        providers_for(t)
        configs = candidate_configs({n: v.precision for n, v in variants.items() if v.format == "onnx"}, t, True, runtimes)
        known = {c.id for c in configs}
        for c in before.get(t, []):  # what the manifest lists (e.g. measured on another machine) is tried too
            if c.id not in known and why_not_here(c, t) is None and (runtimes is None or c.runtime in runtimes):
                configs.append(CandidateConfig(c.id, c.runtime, c.variant, c.precision, dict(c.options)))
                known.add(c.id)
        check = parity_check(t, samples, references, lambda c: variant_tolerance(variants[c.variant], c.precision),
                             note=notes.append)
        measured, timings = interleave.measure_candidates(spec, configs, lambda n: b.read(variants[n].file), t, samples[0].feeds,
                                               check, note=notes.append)
        if not measured:
            raise BundleError(f"bundle {b.path}: no candidate passes parity on {t} on this machine; nothing was written.")
        selection[t] = selection_record(timings)
        # what this host cannot run stays, after what it measured, for the hosts that can
        done = {c.id for c in measured}
        kept = [replace(c, unmeasured=f"not measured by the tune of {dt.date.today().isoformat()}: {why}")
                for c in before.get(t, []) if c.id not in done and (why := _not_measured(c, t, runtimes)) is not None]
        after[t] = rank(measured, vacuous, selection[t]["noise"]) + kept
    changes = [_change(t, before.get(t, []), after[t], m.get("defaults") or {}) for t in after]
    manifest = {k: v for k, v in m.items() if k not in ("schema_version", "files")}
    manifest["defaults"] = {**(m.get("defaults") or {}), **{t: cs[0].variant for t, cs in after.items()}}
    manifest["candidates"] = {**(m.get("candidates") or {}), **{t: [c.to_dict() for c in cs] for t, cs in after.items()}}
    earlier = m.get("selection")
    manifest["selection"] = {**(earlier if isinstance(earlier, dict) else {}), **selection}
    for n, v in manifest["variants"].items():
        for t, cs in after.items():
            plain = next((c for c in cs if c.id == n and c.plain), None)
            if plain is not None and isinstance(v, dict):
                old = v.get("latency_ms")
                v["latency_ms"] = {**(old if isinstance(old, dict) else {}), t: plain.p50_ms}
    host = host_info()
    manifest["tuned"] = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": host,
                         "tools": tool_versions(), "previous_defaults": dict(m.get("defaults") or {}),
                         "changes": changes, "notes": notes}
    out = Path(output) if output is not None else b.path
    written = _rewrite(b, out, manifest)
    return TuneResult(written, before, after, changes, notes, host, selection)


def _rewrite(b: Bundle, out: Path, manifest: dict) -> Path:
    """Write the bundle's verified files with ``manifest`` to ``out``. They are copied first into a
    locked work folder in TMPDIR (``pipeline.workdir``: a later export or tune removes it if this
    process is killed), after checking that it has room for them.

    Raises:
        DiskFullError: TMPDIR has no room for the copy.
    """
    unchanged = f"{out} is unchanged." if out == b.path else f"Nothing was written to {out}."
    with work_folder() as tmp:
        workdir.ensure_room(tmp, sum(int(meta["size"]) for meta in b.files.values()), "a copy of the bundle", unchanged)
        files = {}
        try:
            for rel in b.files:  # the verified bytes, not whatever the paths hold now
                dst = Path(tmp, rel)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(b.read(rel))
                files[rel] = dst
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskFullError(f"disk full in TMPDIR ({tmp.parent}) while copying the bundle to rewrite it: "
                                f"{e.strerror}; free space there or point TMPDIR at a folder with room. {unchanged}") from e
        return write_bundle(out, files, manifest)


def _not_measured(c: Candidate, target: str, runtimes: tuple[str, ...] | None) -> str | None:
    """Why tune left candidate ``c`` unmeasured here (this host cannot run it, or ``--runtime``
    left its runtime out); None when it was measured, or tried and failed here (then it goes)."""
    if runtimes is not None and c.runtime not in runtimes:
        return f"--runtime {','.join(runtimes)}"
    return why_not_here(c, target)


def _change(t: str, before: list[Candidate], after: list[Candidate], defaults: dict) -> str:
    new = after[0]
    old = before[0] if before else next((c for c in after if c.id == defaults.get(t)), None)
    ms = f"{new.p50_ms:.3g} ms" if new.p50_ms is not None else "unmeasured"
    if old is not None and old.id == new.id:
        return f"{t}: the default stays {new.describe()} ({ms} here): still the fastest that passes parity"
    old_here = next((c for c in after if old is not None and c.id == old.id and not c.unmeasured), None)
    if old is None:
        why = "the bundle named no candidate"
    elif old_here is None:
        why = f"the previous default {old.describe()} does not pass parity or does not run here"
    elif old_here.p50_ms and new.p50_ms:
        why = f"{old_here.p50_ms / new.p50_ms:.2f}× faster than the previous default {old.describe()} ({old_here.p50_ms:.3g} ms here)"
    else:
        why = f"faster than the previous default {old.describe()}"
    return f"{t}: the default is now {new.describe()} ({ms}): {why}"

