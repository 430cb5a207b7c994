"""Cold start in a fresh process: one configuration's session creation + first call, measured in
a Python process of its own.

The first configuration a process opens pays the runtime's one-time start-up work, which every later
one skips (SimpleNet on onnxruntime, medians of 10 processes: fp32 5.4 ms when first, 1.3 ms when
second; dynamic int8 8.8 ms when first, 3.7 ms when second). Timed in the profiler's own process,
the figure depends on the order the configurations ran in, not on the configuration. So
:func:`measure` starts a child per configuration (``sys.executable -c ...`` running :func:`main`),
and every configuration pays that start-up alike.

What the child does, in order:

1. reads the request from stdin: one JSON line (the runtime and the arguments of its harness:
   target, providers, threads, options, precision...), the model's bytes (or a path), the feeds;
2. imports numpy, the runtime (``onnxruntime``, ``openvino`` or ``torch``) and edgeship's harness
   for it: timed apart as ``import_ms``, never part of the cold start (nor is Python's own start-up);
3. opens the configuration with the very harness function and arguments the profiler times in
   its own process (:mod:`edgeship.profiling.harness`), then makes one call:
   ``session_ms`` (open), ``first_run_ms`` (the call), ``cold_start_ms`` = their sum, read on
   ``time.perf_counter_ns`` like every other figure of the profiler;
4. prints one line, ``edgeship-cold-start {json}``, on stdout.

A child that fails, crashes or runs past its timeout gives no figure: :class:`ColdStart` carries
the reason instead, and the profiler leaves that configuration's cold start unmeasured (None).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np

    from edgeship.config import LoadOptions
    from edgeship.profiling.harness import Harness

log = logging.getLogger(__name__)
__all__ = ["Children", "ColdStart", "Request", "child", "decode", "main", "measure", "spawn", "time_open", "timeout_for"]

# What the figure leaves out, and who measures it where it was not: for notes and report.html.
EXCLUDED = "Python's start-up and the runtime's import are not included"
MEASURED_BY = "`edgeship profile` measures it (--cold-start fresh, the default), each configuration in a fresh process"
MARKER = "edgeship-cold-start"
MIN_TIMEOUT_S = 60.0  # Python's start-up and the imports (torch takes seconds) fit well within it
TIMEOUT_FACTOR = 20.0  # times the same configuration's open + first call in the profiler's process
RUNTIMES = ("onnxruntime", "openvino", "torch")


@dataclass(frozen=True)
class Request:
    """One configuration to open in a child: its runtime, the JSON arguments of that runtime's
    harness besides the model and feeds, the feeds, and the model (bytes, a path, or None for an
    eager PyTorch file named in ``params``)."""

    runtime: str
    params: dict
    feeds: Mapping[str, np.ndarray] = field(repr=False)
    model: bytes | str | None = field(default=None, repr=False)

    @classmethod
    def ort(cls, model: bytes | str, target: str, providers: list[str], threads: int, feeds: Mapping[str, np.ndarray],
            options: dict | None = None) -> Request:
        """The arguments of :func:`~edgeship.profiling.harness.ort_harness`."""
        return cls("onnxruntime", {"target": target, "providers": list(providers), "threads": threads,
                                   "options": dict(options or {})}, feeds, model)

    @classmethod
    def openvino(cls, model: bytes | str, precision: str, threads: int, feeds: Mapping[str, np.ndarray]) -> Request:
        """The arguments of :func:`~edgeship.profiling.harness.openvino_harness`."""
        return cls("openvino", {"precision": precision, "threads": threads}, feeds, model)

    @classmethod
    def torch(cls, threads: int, feeds: Mapping[str, np.ndarray], input_names: list[str], *,
              path: str | os.PathLike | None = None, load: LoadOptions | None = None, recorded: dict | None = None,
              torchscript: bytes | None = None) -> Request:
        """:func:`~edgeship.profiling.harness.torch_harness` on an eager model file (``path``, loaded
        as ``--compare-torch`` loads it) or on TorchScript bytes."""
        params: dict[str, Any] = {"threads": threads, "input_names": list(input_names)}
        if torchscript is None:
            params.update(path=os.path.abspath(str(path)), load=asdict(load) if load is not None else None,
                          recorded=dict(recorded or {}))
        return cls("torch", params, feeds, torchscript)

    def parts(self) -> list[bytes]:
        """What a child reads on stdin, in order: a JSON line, the model's bytes (when it is given
        as bytes), then each feed as an .npy blob. Separate parts, so a large model is never copied."""
        import numpy as np

        blobs = []
        for name, a in self.feeds.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            blobs.append((name, buf.getvalue()))
        model: dict | None = None
        if isinstance(self.model, bytes):
            model = {"bytes": len(self.model)}
        elif self.model is not None:
            model = {"path": os.path.abspath(self.model)}
        head = {"runtime": self.runtime, "params": self.params, "model": model,
                "feeds": [[n, len(b)] for n, b in blobs]}
        body = [self.model] if isinstance(self.model, bytes) else []
        return [json.dumps(head).encode() + b"\n", *body, *(b for _, b in blobs)]

    def encode(self) -> bytes:
        """:meth:`parts` as one bytes object."""
        return b"".join(self.parts())


def _read_head(stream: BinaryIO) -> dict:
    line = stream.readline(1 << 20)
    try:
        head = json.loads(line) if line.endswith(b"\n") else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("runtime") not in RUNTIMES:
        raise ValueError("not a cold-start request")
    return head


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"a cold-start request cut short: {len(data)} of {n} bytes")
    return data


def _read_body(head: dict, stream: BinaryIO) -> Request:
    import numpy as np

    model: bytes | str | None = None
    if head["model"] is not None and "bytes" in head["model"]:
        model = _read(stream, head["model"]["bytes"])
    elif head["model"] is not None:
        model = head["model"]["path"]
    feeds = {name: np.lib.format.read_array(io.BytesIO(_read(stream, n)), allow_pickle=False) for name, n in head["feeds"]}
    return Request(head["runtime"], head["params"], feeds, model)


def decode(data: bytes | BinaryIO) -> Request:
    """The request :meth:`Request.parts` wrote (its bytes, or a stream of them).

    Raises:
        ValueError: the bytes are not one.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    return _read_body(_read_head(stream), stream)


@dataclass(frozen=True)
class ColdStart:
    """What one child measured, in ms, or why it measured nothing (``reason``)."""

    session_ms: float | None = None
    first_run_ms: float | None = None
    import_ms: float | None = None  # the runtime's import in the child: reported apart, not in the cold start
    reason: str | None = None

    @property
    def cold_start_ms(self) -> float | None:
        if self.session_ms is None or self.first_run_ms is None:
            return None
        return self.session_ms + self.first_run_ms


# ----------------------------------------------------------------------------- parent side
def timeout_for(in_process_s: float) -> float:
    """A child's time limit: :data:`MIN_TIMEOUT_S`, or :data:`TIMEOUT_FACTOR` times what the same
    configuration's open + first call took in the profiler's process, whichever is longer."""
    return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * in_process_s) if math.isfinite(in_process_s) else MIN_TIMEOUT_S


def _child_argv() -> list[str]:
    """``python -c`` code that runs :func:`main` with the same edgeship as this process, and without
    the current directory on sys.path (a ``numpy.py`` there is not imported)."""
    root = str(Path(__file__).resolve().parents[2])
    installed = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    paths = [] if os.path.realpath(root) in installed else [root]
    code = (f"import sys; sys.path[:] = {paths!r} + [p for p in sys.path if p]; "
            "from edgeship.profiling.coldstart import main; main()")
    return [sys.executable, "-c", code]


def _spawn(argv: list[str], parts: list[bytes], timeout_s: float) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``parts`` written to its stdin (by a thread, part by part: no joined copy)."""
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        pipe, p.stdin = p.stdin, None  # written here, not by communicate()
        assert pipe is not None

        def feed() -> None:
            try:
                for part in parts:
                    pipe.write(part)
            except OSError:  # the child ended early (a crash, a kill): its exit status says why
                pass
            finally:
                with contextlib.suppress(OSError):
                    pipe.close()

        writer = threading.Thread(target=feed, name="edgeship-cold-start-stdin", daemon=True)
        writer.start()
        try:
            out, err = p.communicate(timeout=timeout_s)
        except BaseException:  # the time limit, or an interrupt: the child goes too
            p.kill()
            p.communicate()
            raise
        finally:
            writer.join()
        return subprocess.CompletedProcess(argv, p.returncode, out, err)


# How a child is started: a hook for tests, which put fake children here (figures per
# configuration, a crash, a timeout); nothing else replaces it.
spawn: Callable[[list[str], list[bytes], float], subprocess.CompletedProcess] = _spawn


def measure(request: Request, timeout_s: float = MIN_TIMEOUT_S) -> ColdStart:
    """Open ``request``'s configuration in a fresh child process and make its first call there.

    Never raises for the child: a child that cannot start, fails, crashes or runs past
    ``timeout_s`` (it is killed) gives a :class:`ColdStart` with no figures and the reason.
    """
    try:
        p = spawn(_child_argv(), request.parts(), timeout_s)
    except subprocess.TimeoutExpired:
        return ColdStart(reason=f"its process did not finish within {timeout_s:.0f} s and was stopped")
    except OSError as e:
        return ColdStart(reason=f"its process could not start: {e}")
    stderr = _text(p.stderr)
    if p.returncode != 0:
        how = (f"was killed by signal {_signal_name(-p.returncode)}" if p.returncode < 0
               else f"exited with status {p.returncode}")
        last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
        return ColdStart(reason=f"its process {how}" + (f": {last[:300]}" if last else ""))
    line = next((ln for ln in reversed(_text(p.stdout).splitlines()) if ln.startswith(MARKER + " ")), None)
    try:
        got = json.loads(line[len(MARKER) + 1:]) if line else None
        figures = [float(got[k]) for k in ("session_ms", "first_run_ms", "import_ms")] if isinstance(got, dict) else None
    except (ValueError, TypeError, KeyError):
        figures = None
    if line is None:
        return ColdStart(reason="its process printed no result")
    if figures is None or not all(math.isfinite(v) and v >= 0 for v in figures):
        return ColdStart(reason=f"its process printed an unusable result: {line[:200]}")
    return ColdStart(session_ms=figures[0], first_run_ms=figures[1], import_ms=figures[2])


class Children:
    """The cold-start children of one profile run (``mode`` ``fresh`` or ``off``): each
    configuration's own measurement, and the notes that say what the figures are and which
    configurations have none."""

    def __init__(self, mode: str):
        self.mode = mode
        self.failed: list[str] = []
        self.imports: dict[str, list[float]] = {}

    def measure(self, request: Request | None, label: str, runtime: str, opened_s: float) -> ColdStart:
        """:func:`measure` for the configuration ``label``, with :func:`timeout_for` ``opened_s``;
        a failure is logged and noted, and gives no figure."""
        got = (measure(request, timeout_for(opened_s)) if request is not None
               else ColdStart(reason="no fresh-process measurement for this runtime"))
        if got.reason is not None:
            log.warning("%s: cold start not measured: %s", label, got.reason)
            self.failed.append(f"{label}: cold start not measured: {got.reason}")
        elif got.import_ms is not None:
            self.imports.setdefault(runtime, []).append(got.import_ms)
        return got

    def notes(self) -> list[str]:
        """What the cold-start figures are (or that there are none), then each failure."""
        if self.mode == "off":
            return [f"cold start not measured in this run; {MEASURED_BY}"]
        took = "; ".join(f"importing {rt} there took {statistics.median(ms):.0f} ms, median"
                         for rt, ms in self.imports.items())
        return [f"cold start = session creation + first call, each configuration in a Python process of its own (so "
                f"each pays the runtime's one-time process start-up alike); {EXCLUDED}" + (f" ({took})" if took else ""),
                *self.failed]


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)


# ----------------------------------------------------------------------------- child side
def time_open(open_: Callable[[], Harness], clock: Callable[[], int]) -> tuple[Harness, int, int]:
    """Open a configuration and make its first call: ``(harness, open ns, first call ns)`` on
    ``clock`` (integer ns). The harness is left open (closed here only when the call fails)."""
    t0 = clock()
    h = open_()
    try:
        t1 = clock()
        h.call(*h.args)
        t2 = clock()
    except BaseException:
        h.close()
        raise
    return h, t1 - t0, t2 - t1


def _import_runtime(runtime: str) -> None:
    """Import what opening ``runtime`` needs (telemetry off: :mod:`edgeship.telemetry`), so the timed open does not."""
    import numpy  # noqa: F401

    import edgeship.profiling.harness  # noqa: F401
    from edgeship import telemetry

    if runtime == "onnxruntime":
        telemetry.quiet_onnxruntime_import()  # done by ``import edgeship`` already; read on import
        import onnxruntime  # noqa: F401

        import edgeship.runtimes.ort  # noqa: F401
    elif runtime == "openvino":
        telemetry.import_openvino()

        import edgeship.runtimes.openvino  # noqa: F401
    else:
        import torch  # noqa: F401

        import edgeship.exporters.loading  # noqa: F401


def _opener(req: Request) -> Callable[[], Harness]:
    """The profiler's own harness call for ``req``'s configuration."""
    from functools import partial

    from edgeship.profiling import harness

    p = req.params
    if req.runtime == "onnxruntime":
        assert req.model is not None
        return partial(harness.ort_harness, req.model, p["target"], p["providers"], p["threads"], dict(req.feeds),
                       options=p["options"])
    if req.runtime == "openvino":
        return partial(harness.openvino_harness, req.model, p["precision"], p["threads"], dict(req.feeds))
    if req.model is not None:  # TorchScript bytes
        import torch

        data = req.model if isinstance(req.model, bytes) else Path(req.model).read_bytes()

        def load() -> Any:
            return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    else:
        from edgeship.config import LoadOptions
        from edgeship.exporters.loading import load_reference

        opts: dict[str, Any] | None = p.get("load")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (opts or {}).items()}
        options = LoadOptions(**fields) if opts else None

        def load() -> Any:
            return load_reference(Path(p["path"]), options, p.get("recorded"), "--compare-torch")
    return partial(harness.torch_harness, load, p["threads"], dict(req.feeds), p["input_names"])


def child(data: bytes | BinaryIO) -> dict[str, float]:
    """What a child does with a request (:meth:`Request.parts`, as bytes or a stream): read its
    head, import the runtime, read the rest, open the configuration and make its first call; the
    figures in ms."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    head = _read_head(stream)
    t0 = time.perf_counter_ns()
    _import_runtime(head["runtime"])
    import_ns = time.perf_counter_ns() - t0
    h, open_ns, first_ns = time_open(_opener(_read_body(head, stream)), time.perf_counter_ns)
    h.close()
    return {"session_ms": open_ns / 1e6, "first_run_ms": first_ns / 1e6, "import_ms": import_ns / 1e6}


def main() -> None:
    """The child process: read a request on stdin, print :func:`child`'s figures on one line."""
    try:
        got = child(sys.stdin.buffer)
    except Exception as e:  # the parent reads the last line of stderr as the reason
        sys.stderr.write(f"{type(e).__name__}: {' '.join(str(e).split())}\n")
        sys.exit(1)
    sys.stdout.write(f"{MARKER} {json.dumps(got)}\n")
    sys.stdout.flush()
