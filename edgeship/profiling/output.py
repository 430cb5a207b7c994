"""A profile report's files: ``--json`` (with every call's latency in an .npz beside it) and ``--csv``.

    from edgeship.profiling.output import write_csv, write_json
    write_json(report, "profile.json")   # profile.json + profile.npz
    write_csv(report, "profile.csv")

Nothing is written through a symbolic link edgeship was not given; a write that fails is an
:class:`~edgeship.errors.EdgeshipError` naming the file.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship import jsonout, schemas
from edgeship.errors import EdgeshipError, SpecError

if TYPE_CHECKING:
    from edgeship.profiling.baseline import Comparison
    from edgeship.profiling.profiler import ProfileReport

__all__ = ["CSV_FIELDS", "csv_cell", "latencies_path", "write_csv", "write_json", "write_text"]

CSV_FIELDS = ("runtime", "target", "variant", "threads", "batch", "iterations", "cold_start_ms", "session_ms",
              "first_run_ms", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
              "throughput_per_s", "peak_rss_mb", "rss_growth_mb", "providers", "options")


def latencies_path(path: str | os.PathLike) -> Path:
    """Where :func:`write_json` puts every call's latency: the .npz beside ``path``, same stem.

    Raises:
        SpecError: that is the JSON file itself (``--json r.npz``, or a link between the two), or a
            symbolic link (edgeship writes no file through a link it was not given).
    """
    path = Path(path)
    npz = path.with_suffix(".npz")
    if npz == path or os.path.realpath(npz) == os.path.realpath(path):
        raise SpecError(f"--json {path}: every call's latency goes to {npz.name} beside the JSON, which would "
                        f"overwrite the JSON itself; give the JSON a .json name (e.g. --json {path.with_suffix('.json')}).")
    if npz.is_symlink():
        raise SpecError(f"--json {path}: the latencies go to {npz}, which is a symbolic link; edgeship writes no file "
                        "through a link it was not given. Remove the link or give the JSON another name.")
    return npz


def write_json(report: ProfileReport, path: str | os.PathLike, comparison: Comparison | None = None,
               arrays: bool = True) -> Path:
    """The report as JSON, and (``arrays``) every call's latency (ms) in an .npz beside it (same
    stem: :func:`latencies_path`, never the JSON itself nor through a link)."""
    path = Path(path)
    npz = latencies_path(path) if arrays else path.with_suffix(".npz")
    d = {**schemas.header("profile"), **report.to_dict()}  # its schema: edgeship/schemas/profile.json
    d["latencies"] = npz.name if arrays else None
    if comparison is not None:
        d["comparison"] = comparison.to_dict()
    write_text(path, jsonout.dumps(d, indent=2))
    if not arrays:
        return path
    with os.fdopen(_open_latencies(npz), "wb") as f:
        calls: dict[str, Any] = {r.label.replace(" ", "/"): r.latencies_ms for r in report.results if r.latencies_ms is not None}
        np.savez(f, **calls)
    return path


def _open_latencies(npz: Path) -> int:
    """``npz`` opened for writing, emptied: never through a link made since :func:`latencies_path`
    checked (POSIX), never blocking on a FIFO at that name, never anything but a regular file."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    not_a_file = (f"{npz}: every call's latency goes to this name beside the JSON, and it is not a regular file (a pipe, "
                  "device or folder); remove it or give the JSON another name.")
    try:
        fd = os.open(npz, flags, 0o666)  # no O_TRUNC yet: nothing is emptied before it is known to be a file
    except OSError as e:
        if npz.is_symlink():
            raise SpecError(f"{npz} became a symbolic link; edgeship writes no file through a link it was not given.") from e
        if e.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO nobody reads; a folder
            raise SpecError(not_a_file) from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError(not_a_file)
    os.ftruncate(fd, 0)
    return fd


def write_csv(report: ProfileReport, path: str | os.PathLike) -> Path:
    """One row per configuration, columns :data:`CSV_FIELDS` (times in ms)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in report.results:
        s = r.stats
        w.writerow([csv_cell(v) for v in (r.runtime, r.target, r.variant, r.threads, r.batch, s.count, r.cold_start_ms,
                    r.session_ms, r.first_run_ms, s.mean, s.std, s.min, s.p50, s.p90, s.p95, s.p99, s.max, r.throughput,
                    r.peak_rss_mb, r.rss_growth_mb, " ".join(r.providers), r.options_text)])
    return write_text(Path(path), buf.getvalue())


def csv_cell(value: object) -> object:
    """A CSV cell: floats to 6 significant digits (``0.006484895000000001`` is ``0.0064849``), as
    the timing's precision warrants; NaN (not measured) as an empty cell."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_text(path: Path, text: str) -> Path:
    """``text`` to ``path``; an OSError as an EdgeshipError naming the file."""
    try:
        path.write_text(text)
    except OSError as e:
        raise EdgeshipError(f"cannot write {path}: {e}") from e
    return path
