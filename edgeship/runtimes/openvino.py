"""OpenVINO's CPU runtime (the optional ``edgeship[openvino]`` extra). Torch-free.

The model reaches OpenVINO as the verified bytes of the bundle's ONNX file
(``Core.read_model(model=bytes, weights=empty tensor)``), never as a path someone could swap
between verification and opening; ONNX that names external data is refused first, as for
onnxruntime (OpenVINO would resolve it against a folder of its choosing). Compiled-model caching
(``CACHE_DIR``) is off unless a candidate's options turn it on.

Precisions: ``fp32`` (OpenVINO's ``f32`` inference precision), ``bf16`` (where the CPU has it;
OpenVINO's own default there) and ``int8`` (a QDQ file, run as OpenVINO quantizes it).

Threads: one runner (so one ``Model``) may be called from any number of threads at once.
OpenVINO's rule is one ``InferRequest`` per thread (a request runs one inference at a time; one
request shared by 8 threads × 25 calls failed 169-196 of the 200 calls with "Infer Request is
busy" and returned 3-24 wrong results). So each calling thread runs its own request, made from the
compiled model on that thread's first call and kept in a ``threading.local``: freed when the
thread ends or the runner closes; the hot path pays one thread-local lookup (~16 ns of a 15 µs
call). With the LATENCY hint the compiled model has one stream, whose threads the calling
threads share: on 2 cores a threads=2 model gave 1181 calls/s from one calling thread, 1186 from
two, 1095 from four. Outputs are the caller's own arrays (OpenVINO copies them out of the
request's buffers, which the next call reuses). tests/test_threads.py checks all of this.

fork(): load OpenVINO models after fork (gunicorn: no ``--preload``, or load in ``post_fork``;
multiprocessing: the ``spawn`` or ``forkserver`` start method). OpenVINO's threads do not survive
fork, and measured with OpenVINO 2026.4 on this 2-core host, a model compiled before the fork and
called in the child hung in 13-17 of 20 children forked while another thread was inside a call,
and in 1-2 of 50 forked right after a call at bf16 (the others ran, on one thread: 1.6 vs 0.9 ms);
a model compiled in a child of a process that had compiled one hung (3 of 3 after the parent
closed its model) or ran on one thread; and such a child hangs at a normal interpreter exit while
an inherited compiled model is alive (multiprocessing's fork workers leave with ``os._exit`` and
do not). So: a model compiled before the fork raises ``InferenceError`` in the child (an
``os.register_at_fork`` hook empties each runner's thread-local requests, and the cold path that
makes one refuses; calls pay nothing), and compiling in a child of a process that compiled one
raises ``TargetUnavailableError`` (so ``edgeship.load`` falls back to the next candidate, down to
onnxruntime). Importing openvino or making its ``Core`` before the fork is harmless: a model
compiled in such a child ran at full speed. tests/test_fork.py.

Timeouts (``edgeship.load(..., timeout=s)``, ``check --timeout``): OpenVINO cannot stop an
inference it started (``InferRequest.cancel`` does not end a running Loop, measured on 2026.4), so
a call past its deadline raises :class:`~edgeship.errors.InferenceTimeout` (``stuck=True``) with the
inference still running on OpenVINO's threads. Its request is then kept alive for the life of the
process (freeing it waits for the inference: the caller's ``except`` block froze when the
exception's frames went), and the runner is marked stuck: every later call, on any thread, raises
``InferenceTimeout`` (``stuck=True``) at once instead of making a new request (that waited for the
stuck inference: it hung in ``create_infer_request``). A process holding a stuck inference cannot
exit normally either (the interpreter's exit waits for it): end it with ``os._exit``, as the CLI
does, and load the model in a new process. tests/hostile/test_runaway.py.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeship.errors import EdgeshipError, ExportError, InferenceError, InferenceTimeout, SpecError, TargetUnavailableError, brief
from edgeship.runtimes.base import Runner
from edgeship.runtimes.deadline import Deadline
from edgeship.runtimes.deadline import current as current_deadline
from edgeship.spec import IOSpec
from edgeship.telemetry import import_openvino

log = logging.getLogger(__name__)

RUNTIME = "openvino"
OPTION_KEYS = ("threads", "cache_dir")
# edgeship precision class -> OpenVINO INFERENCE_PRECISION_HINT
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}


# fork(): see the module's docstring. The process that first compiled a model here (None: none
# yet; a fork()ed child inherits its parent's), the runners compiled, and what a fork copied.
_compiled_in: int | None = None
_runners: weakref.WeakSet[OpenVINORunner] = weakref.WeakSet()
_inherited: list[Any] = []
AFTER_FORK = ("load it after fork() in a process that compiled none before (gunicorn: no --preload, or load "
              "in post_fork; multiprocessing: 'spawn' or 'forkserver')")


def _after_fork_in_child() -> None:
    """Send every runner compiled before the fork to its cold path (``_new_request``), which
    refuses: nothing is destroyed here (the copied requests are kept) and no call pays for it."""
    for runner in list(_runners):
        _inherited.append(runner._local)
        runner._local = threading.local()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Timeouts: see the module's docstring. The requests of inferences OpenVINO could not stop, and the
# thread-local storage of their runners' other requests, kept until the process ends: never freed,
# since freeing one waits for its inference, which may never end.
_stuck: list[Any] = []
STUCK = ("an earlier call timed out and its inference still runs on OpenVINO's threads (OpenVINO cannot stop it); "
         "this model cannot run again in this process, which cannot exit normally either: end it with os._exit "
         "(as the edgeship CLI does) and load the model in a new process")


def installed() -> bool:
    """Whether the ``openvino`` package imports here (imported without its telemetry: see
    :mod:`edgeship.telemetry`)."""
    try:
        import_openvino()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return import_openvino().Core()


def has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (avx512_bf16 or AMX)."""
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no CPU plugin: no bf16
        return False


def check_options(options: dict) -> None:
    """Refuse options this runner cannot honour.

    Raises:
        SpecError: an unknown key, a thread count outside 1..1024, or a cache folder that is not a string.
    """
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise SpecError(f"unknown OpenVINO option(s) {', '.join(sorted(map(str, unknown)))}; use {', '.join(OPTION_KEYS)}.")
    t = options.get("threads")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= 1024):
        raise SpecError(f"OpenVINO threads={t!r}: use a whole number from 1 to 1024.")
    c = options.get("cache_dir")
    if c is not None and (not isinstance(c, str) or not c or "\0" in c):
        raise SpecError(f"OpenVINO cache_dir={c!r}: use a folder path.")


def port_names(ports: list[Any], wanted: list[str]) -> list[str]:
    """The spec's name for each of a compiled model's ports, in port order.

    OpenVINO merges the names of tensors it folds together (a no-op Reshape or an Identity before
    a graph output), and ``get_any_name()`` may then answer the internal one
    (``/class_labels_classifier/MatMul_output_0`` for ``logits``). A port is named by the spec's
    name it carries; names none of them carries go to the remaining ports by position, as OpenVINO
    keeps the ONNX graph's order. With another port count, each port's own name (the mismatch is
    then reported by :meth:`OpenVINORunner.io_problems`)."""
    ports = list(ports)
    if len(ports) != len(wanted):
        return [p.get_any_name() for p in ports]
    names: list[str | None] = [next((n for n in wanted if n in p.get_names()), None) for p in ports]
    left = iter([n for n in wanted if n not in names])
    return [n if n is not None else next(left, p.get_any_name()) for n, p in zip(names, ports)]


class OpenVINORunner(Runner):
    """Runs an ONNX model (its bytes) with OpenVINO on the CPU at ``precision`` (fp32, bf16, int8)."""

    runtime = RUNTIME

    def __init__(self, spec: IOSpec, model: bytes, *, precision: str = "fp32", options: dict | None = None,
                 name: str | None = None, error: type[EdgeshipError] = ExportError, what: str = "the model bytes"):
        super().__init__(spec)
        if precision not in PRECISION_HINTS:
            raise SpecError(f"OpenVINO precision {precision!r}: use one of {', '.join(PRECISION_HINTS)}.")
        self.options = dict(options or {})
        check_options(self.options)
        if not isinstance(model, bytes):  # a path could be swapped between verification and opening
            raise TypeError("OpenVINORunner takes the model's verified bytes")
        self.model: bytes | None = model
        self.precision = precision
        self.error = error
        self.what = what
        self.name = name or f"openvino-{precision}"
        self.compiled: Any = None
        self._pid: int | None = None  # the process that compiled it
        self._local = threading.local()  # .request: the calling thread's InferRequest
        self.stuck = False  # an inference timed out and still runs: no call can run (see the module's docstring)
        self.output_names: list[str] = []
        self._ports: list[Any] = []

    def _load(self) -> None:
        global _compiled_in
        from edgeship.host import usable_cpus
        from edgeship.runtimes.external_data import refuse_external_data

        if self.model is None:
            raise RuntimeError("the model bytes were released after the model compiled; open a new runner")
        if not installed():
            raise TargetUnavailableError("runtime openvino is not installed here; pip install 'edgeship[openvino]'.")
        if self.precision == "bf16" and not has_bf16():
            raise TargetUnavailableError("OpenVINO bf16 needs a CPU with native bf16 (avx512_bf16 or AMX); this one has none.")
        refuse_external_data(self.model, self.what)
        if _compiled_in not in (None, os.getpid()):
            raise TargetUnavailableError(
                f"OpenVINO cannot compile here: process {_compiled_in} compiled a model before fork()ing this one, and "
                f"OpenVINO's threads do not survive fork; {AFTER_FORK}.")
        ov = import_openvino()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_NUM_THREADS": int(self.options.get("threads") or usable_cpus())}
        hint = PRECISION_HINTS[self.precision]
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if self.options.get("cache_dir"):
            config["CACHE_DIR"] = os.fspath(self.options["cache_dir"])
        try:
            core = _core()
            model = core.read_model(model=self.model, weights=ov.Tensor(np.empty(0, np.uint8)))
            _compiled_in = _compiled_in or os.getpid()  # from here on a fork()ed child cannot compile
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError/its own types for bad graphs
            raise self.error(f"OpenVINO could not open {self.what} at {self.precision}: {brief(e)}") from e
        self._ports = list(self.compiled.outputs)
        self.output_names = port_names(self._ports, self.spec.output_names)
        self._port_of = dict(zip(self.output_names, self._ports))
        self._local = threading.local()
        self._local.request = self.compiled.create_infer_request()  # the loading thread's, made now
        self._pid = os.getpid()
        _runners.add(self)

    @property
    def request(self) -> Any:
        """The calling thread's ``InferRequest`` (made on its first use): OpenVINO's rule is one
        request per thread, a request running one inference at a time."""
        try:
            return self._local.request
        except AttributeError:
            return self._new_request()

    def _new_request(self) -> Any:
        """A request for the calling thread (its first call, or its first in a fork()ed child).

        Raises:
            InferenceError: the model was compiled before this process was fork()ed from its parent.
            InferenceTimeout: an earlier call timed out and its inference still runs (``stuck``).
        """
        local, compiled = self._local, self.compiled
        if compiled is None:
            raise RuntimeError(f"{self.name} is closed; load it again")
        if self.stuck:
            raise InferenceTimeout(f"OpenVINO cannot run {self.name}: {STUCK}.", stuck=True)
        if self._pid != os.getpid():
            raise InferenceError(f"OpenVINO compiled this model in process {self._pid}, which then fork()ed this one, "
                                 f"where it cannot run (a call can hang); {AFTER_FORK}.")
        local.request = compiled.create_infer_request()
        return local.request

    def release_model(self) -> None:
        """Drop the model bytes once compiled (OpenVINO keeps its own copy)."""
        self.model = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.run(self.output_names, feeds)))

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Like onnxruntime's ``session.run``: the outputs (all, or the named ones) in order, as
        arrays of their own (OpenVINO copies them out of the request's buffers, which the next
        call reuses). The inputs are shared, not copied, as onnxruntime shares them: OpenVINO's
        CPU plugin reads the caller's array in place only where no node of the graph would write
        to it (``SyncInferRequest::change_default_ptr``: "checks that the user's memory will not
        be modified"; it copies otherwise, and so for arrays that are not C-contiguous or not
        writable). On EfficientNet-style at 224x224 the copy was 3-4% of the call.

        Each calling thread runs its own ``InferRequest`` (made on the thread's first call, kept in
        a ``threading.local``), so threads never share one: see the module's docstring."""
        try:
            request = self._local.request
        except AttributeError:  # this thread's first call
            request = self._new_request()
        d = current_deadline()
        if d is not None:
            return self._run_within(request, output_names, feeds, d)
        res = request.infer(feeds, share_inputs=True)
        port_of = self._port_of
        return [res[port_of[n]] for n in (output_names or self.output_names)]

    def _run_within(self, request: Any, output_names: list[str] | None, feeds: dict[str, np.ndarray], d: Deadline) -> list:
        """:meth:`run` under a deadline: asynchronously, waiting until ``d``. OpenVINO cannot stop
        an inference it started, so on timeout the runner is abandoned (:meth:`_abandon`) and
        :class:`InferenceTimeout` says so (``stuck``); later calls raise at once."""
        left = d.left()
        if left <= 0:
            raise d.exceeded(self.name, RUNTIME)
        request.start_async(feeds, share_inputs=True)
        if not request.wait_for(max(1, math.ceil(left * 1000))):
            request.cancel()
            self._abandon(request)
            raise d.exceeded(self.name, RUNTIME, stuck=True)
        res = request.results
        port_of = self._port_of
        return [np.array(res[port_of[n]], copy=True) for n in (output_names or self.output_names)]

    def _abandon(self, request: Any) -> None:
        """Keep ``request`` (its inference still running) and every thread's requests alive until the
        process ends, and send every later call to the cold path (:meth:`_new_request`), which
        refuses: freeing the request would wait for its inference, and so would a new request."""
        _stuck.append(request)
        _stuck.append(self._local)
        self.stuck = True
        self._local = threading.local()

    def timing_call(self, feeds: dict[str, np.ndarray]) -> tuple[Callable, tuple]:
        self.load()
        return self.run, (None, feeds)

    def io_problems(self) -> list[str]:
        """Where the compiled model's inputs and outputs disagree with the spec: names, element
        types, and for inputs ranks and fixed sizes (as :meth:`OrtRunner.io_problems` checks them)."""
        self.load()
        problems = []
        inputs = port_names(self.compiled.inputs, self.spec.input_names)
        if inputs != list(self.spec.input_names):
            problems.append(f"inputs are {inputs} in the model, {list(self.spec.input_names)} in the spec")
        if self.output_names != list(self.spec.output_names):
            problems.append(f"outputs are {self.output_names} in the model, {list(self.spec.output_names)} in the spec")
        if problems:
            return problems
        for label, specs, ports in (("input", self.spec.inputs, self.compiled.inputs), ("output", self.spec.outputs, self._ports)):
            for t, p in zip(specs, ports):
                dtype = str(p.get_element_type().to_dtype())
                if dtype != t.dtype:
                    problems.append(f"{label} {t.name!r} is {dtype} in the model, {t.dtype} in the spec")
                    continue
                if label == "input":
                    dims = [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
                    if len(dims) != len(t.shape) or any(m is not None and isinstance(d, int) and m != d for m, d in zip(dims, t.shape)):
                        problems.append(f"input {t.name!r} has shape {dims} in the model, {list(t.shape)} in the spec")
        return problems

    def _close(self) -> None:
        self._local = threading.local()  # drops every thread's request (CPython clears them with the old one)
        self.compiled = None
