"""Per-op profiles: onnxruntime's own profiler, aggregated by op type and node."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from bisect import bisect_right
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeship.errors import DiskFullError
from edgeship.profiling.harness import ort_harness

_KERNEL = "_kernel_time"
# what the per-op total counts (it can exceed the measured p50)
KERNEL_TIME = ("the sum of every node's kernel time, without session overhead; kernels on parallel threads add up, "
               "so it can exceed the wall-clock p50")


def ort_op_profile(model, target: str, providers: list[str], threads: int, feeds: dict,
                   warmup: int, runs: int, top: int, options: dict | None = None) -> OpProfile:
    """Profile ``runs`` inferences with onnxruntime's own profiler in a separate session
    (profiling slows the runs, so the timed session never has it on) and aggregate its JSON.

    Raises:
        DiskFullError: onnxruntime's JSON (written in TMPDIR) is cut short and the disk there is
            full (onnxruntime does not report a failed write of it).
    """
    with tempfile.TemporaryDirectory(prefix="edgeship-prof-") as d:
        h = ort_harness(model, target, providers, threads, feeds, profile_prefix=os.path.join(d, "ort"), options=options)
        try:
            for _ in range(warmup + runs):
                h.call(*h.args)
            path = h.session.end_profiling()
        finally:
            h.close()
        try:
            with open(path) as f:
                events = json.load(f)
        except ValueError as e:
            free = shutil.disk_usage(d).free
            if free >= 1 << 20:
                raise
            raise DiskFullError(f"disk full in TMPDIR ({free} bytes free) in {d}: onnxruntime's per-op profile there is "
                                f"cut short ({e}); free space there or point TMPDIR at a folder with room.") from e
    return aggregate_ort_profile(events, skip_runs=warmup, top=top)


@dataclass(frozen=True)
class OpShare:
    """Time of one op type or node per inference (µs), calls per inference, share of node time."""

    name: str
    op_type: str
    us: float
    calls: float
    share: float
    provider: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OpProfile:
    """onnxruntime's per-node kernel times per inference (trimmed means over ``runs`` profiled runs)."""

    runs: int
    total_us: float
    op_types: tuple[OpShare, ...] = ()
    nodes: tuple[OpShare, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"runs": self.runs, "total_us": self.total_us,
                "op_types": [o.to_dict() for o in self.op_types], "nodes": [n.to_dict() for n in self.nodes]}


def _trimmed_mean(values) -> float:
    a = np.sort(np.asarray(values, dtype=np.float64))
    k = a.size // 10
    return float(a[k:a.size - k].mean())


def aggregate_ort_profile(events: list, skip_runs: int = 0, top: int = 10) -> OpProfile:
    """Top op types and nodes by kernel time per inference from onnxruntime's profiling JSON.

    Node events (``cat == "Node"``, name ``<node>_kernel_time``, ``dur`` in µs, ``args.op_name``)
    count when they fall inside a ``model_run`` session event after the first ``skip_runs``
    (warm-up) runs. A node's time per inference is the mean over the kept runs of its time in each
    run, trimmed of the fastest and slowest 10% of runs, so a stalled run (a descheduled thread on
    a busy machine) does not dominate while sub-µs differences survive (onnxruntime writes whole
    µs). An op type's time is the sum over its nodes; shares are of the sum over all nodes. Calls
    per inference are averaged. Without ``model_run`` events every node event counts (mean per call).
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    starts = [a for a, _ in runs]
    kept = len(runs) - skip_runs
    nodes: dict[str, list] = {}  # name -> [op type, provider, calls, time per kept run (or per call)]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(_KERNEL):
            continue
        i = bisect_right(starts, e["ts"]) - 1
        if runs and (i < skip_runs or e["ts"] > runs[i][1]):
            continue
        args = e.get("args") or {}
        entry = nodes.setdefault(e["name"][: -len(_KERNEL)], [args.get("op_name", "?"), args.get("provider", ""), 0,
                                                              np.zeros(kept) if runs else []])
        entry[2] += 1
        if runs:
            entry[3][i - skip_runs] += float(e.get("dur", 0))
        else:
            entry[3].append(float(e.get("dur", 0)))
    if not runs:
        kept = max((v[2] for v in nodes.values()), default=0)
    if not nodes or kept <= 0:
        return OpProfile(max(kept, 0), 0.0)
    per_node = {n: (op, prov, calls / kept, _trimmed_mean(t) if runs else float(np.mean(t)))
                for n, (op, prov, calls, t) in nodes.items()}
    total = sum(v[3] for v in per_node.values()) or 1.0
    types: dict[str, list] = {}
    for op, _, calls, us in per_node.values():
        t = types.setdefault(op, [0.0, 0.0])
        t[0] += us
        t[1] += calls
    op_rows = sorted((OpShare(op, op, us, calls, us / total) for op, (us, calls) in types.items()), key=lambda r: -r.us)
    node_rows = sorted((OpShare(n, op, us, calls, us / total, prov) for n, (op, prov, calls, us) in per_node.items()),
                       key=lambda r: -r.us)
    return OpProfile(kept, sum(v[3] for v in per_node.values()), tuple(op_rows[:top]), tuple(node_rows[:top]))
