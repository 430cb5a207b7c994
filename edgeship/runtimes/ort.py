"""onnxruntime: THE session factory, target resolution and the runner. Torch-free.

Every place in edgeship that opens an onnxruntime session does it through :func:`open_session`:
one set of session options, one provider-fallback check (onnxruntime falls back to the CPU
silently; a check or a benchmark must not), one error wrapping. Targets resolve to provider
lists in :func:`providers_for` (``auto`` in :func:`resolve_target` / :func:`resolve_targets`),
and :func:`io_specs` turns a session's inputs and outputs into edgeship's ``TensorSpec``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from edgeship.errors import EdgeshipError, ExportError, SpecError, TargetUnavailableError, brief
from edgeship.runtimes.base import Runner
from edgeship.runtimes.deadline import current as current_deadline
from edgeship.runtimes.deadline import run_ort
from edgeship.spec import IOSpec, TensorSpec

log = logging.getLogger(__name__)

TARGET_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    # ORT-format variants (export --target mobile) on onnxruntime's CPU provider: what a phone runs
    # without NNAPI/CoreML, and what onnxruntime's Python package checks them with here
    "mobile": ["CPUExecutionProvider"],
}
MOBILE = "mobile"

# onnxruntime's type strings -> numpy dtype names
ORT_DTYPES = {f"tensor({k})": v for k, v in {
    "float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
    "uint64": "uint64", "bool": "bool"}.items()}

_warned_auto = False


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(target: str) -> list[str]:
    """Map a target (``cpu``, ``cuda``, ``tensorrt``, ``mobile`` or a provider name) to a provider list.

    Raises:
        TargetUnavailableError: the target is unknown or its first provider is not installed.
    """
    providers = TARGET_PROVIDERS.get(target.lower())
    if providers is None and target.endswith("ExecutionProvider"):
        providers = [target]
    if providers is None:
        raise TargetUnavailableError(
            f"unknown target {target!r}; use cpu, cuda, tensorrt, mobile or an onnxruntime provider name "
            "such as OpenVINOExecutionProvider."
        )
    have = available_providers()
    if providers[0] not in have:
        gpu = "CUDA" in providers[0] or "Tensorrt" in providers[0]
        hint = "install onnxruntime-gpu in place of onnxruntime" if gpu else "install an onnxruntime build that has it"
        raise TargetUnavailableError(f"requested target {target} ({providers[0]}); available: {', '.join(have)}; {hint}.")
    return providers


def resolve_target(target: str) -> tuple[str, list[str]]:
    """One target and its providers; ``auto`` is CUDA where usable, else CPU (said once)."""
    global _warned_auto
    if target != "auto":
        return target, providers_for(target)
    if "CUDAExecutionProvider" in available_providers():
        return "cuda", providers_for("cuda")
    if not _warned_auto:
        log.warning("target='auto': no CUDA execution provider here, running on CPU.")
        _warned_auto = True
    return "cpu", providers_for("cpu")


def resolve_targets(requested: tuple[str, ...] | list[str]) -> list[str]:
    """Several targets, in order and without repeats; ``auto`` is cpu plus cuda where present."""
    have_cuda = "CUDAExecutionProvider" in available_providers() if "auto" in requested else False
    names: list[str] = []
    for t in requested:
        names += (["cpu"] + (["cuda"] if have_cuda else [])) if t == "auto" else [t]
    return list(dict.fromkeys(names))


MAX_THREADS = 1024


def check_threads(threads: int | None, name: str = "threads") -> None:
    """Refuse a thread count onnxruntime cannot honour (it segfaults or exhausts memory on 10**6).

    Args:
        name: the argument, as messages name it (``threads``, ``inter_op_threads``).

    Raises:
        SpecError: not None and not an int from 1 to :data:`MAX_THREADS`.
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or not 1 <= threads <= MAX_THREADS):
        raise SpecError(f"{name}={threads!r}: use a whole number of threads from 1 to {MAX_THREADS} "
                        f"(this machine has {os.cpu_count()} cores), or leave it out for one per core.")


OPT_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int | None = None, *, profile_prefix: str | None = None,
                    optimized_path: str | None = None, basic_level: bool = False,
                    inter_op_threads: int | None = None, base: Any = None,
                    spinning: bool | None = None, opt_level: str | None = None) -> Any:
    """edgeship's onnxruntime session options.

    Args:
        threads: intra-op threads (default: one per core; a default session ran like a one-thread
            session on 2-core machines, so it is set explicitly).
        profile_prefix: turn on onnxruntime's profiler, writing JSON with this prefix.
        optimized_path: write the optimised model here (offline optimisation).
        basic_level: provider-independent optimisations only (a portable optimised file).
        inter_op_threads: threads running independent nodes in parallel; setting it also turns
            on onnxruntime's parallel execution mode (it has no effect in the sequential mode).
        base: an ``onnxruntime.SessionOptions`` of the caller's to start from; its intra-op
            threads are kept unless ``threads`` is given.
        spinning: whether idle intra-op threads spin (``session.intra_op.allow_spinning``;
            onnxruntime's default is on); None keeps the default.
        opt_level: graph optimisation level, one of :data:`OPT_LEVELS`; None keeps the default (all).
    """
    import onnxruntime as ort

    from edgeship.host import usable_cpus

    check_threads(threads)
    check_threads(inter_op_threads, "inter_op_threads")
    so = base if base is not None else ort.SessionOptions()
    if base is None:
        so.log_severity_level = 4  # errors reach users through EdgeshipError, not ORT's log
    if base is None or threads:
        so.intra_op_num_threads = threads or usable_cpus()
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if opt_level is not None:
        if opt_level not in OPT_LEVELS:
            raise SpecError(f"graph optimisation level {opt_level!r}: use one of {', '.join(OPT_LEVELS)}.")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opt_level]
    if inter_op_threads:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = inter_op_threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if basic_level:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


def candidate_session_options(options: dict, threads: int | None = None, **kwargs: Any) -> Any:
    """:func:`session_options` for a candidate's runtime options (``threads``, ``spinning``,
    ``opt_level``; threads resolved for this host by :func:`edgeship.host.resolve_threads`);
    ``threads`` given here wins over the candidate's; ``kwargs`` go to :func:`session_options`."""
    from edgeship.host import resolve_threads

    t = threads or (resolve_threads(options["threads"]) if options.get("threads") is not None else None)
    return session_options(t, spinning=options.get("spinning"), opt_level=options.get("opt_level"), **kwargs)


def bind_io(session: Any, feeds: dict[str, Any], output_names: list[str], device: str = "cuda",
            device_id: int = 0) -> tuple[Any, list]:
    """onnxruntime IO binding: numpy ``feeds`` copied to ``device`` once (``OrtValue``s already
    there are bound as they are) and the outputs bound on ``device``.

    Returns:
        ``(binding, keep)``: ``session.run_with_iobinding(binding)`` runs on the bound tensors;
        ``keep`` holds the device copies alive as long as the binding is used.
    """
    import onnxruntime as ort

    binding = session.io_binding()
    keep = []
    for name, value in feeds.items():
        if isinstance(value, np.ndarray):
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device, device_id)
            keep.append(value)
        binding.bind_ortvalue_input(name, value)
    for name in output_names:
        binding.bind_output(name, device, device_id)
    binding.synchronize_inputs()
    return binding, keep


def open_session(model: bytes | str | os.PathLike, *, target: str = "cpu", providers: list[str] | None = None,
                 options: Any = None, error: type[EdgeshipError] = ExportError, what: str | None = None,
                 provider_options: dict[str, Any] | None = None) -> Any:
    """Open an onnxruntime ``InferenceSession`` on ``model`` (its bytes or a path).

    ORT-format models (ONNX Runtime Mobile's ``.ort``) open the same way, with no
    ``session.load_model_format`` hint: onnxruntime takes bytes with the ORT file identifier at byte 4
    (:func:`edgeship.runtimes.ort_format.is_ort_format`, the check :func:`refuse_external_data` uses to
    walk them) and a path ending in ``.ort`` as that format.

    Args:
        target: resolved with :func:`providers_for` unless ``providers`` is given.
        options: from :func:`session_options` (default: its defaults).
        error: the EdgeshipError class a failure to open is reported as.
        what: how to name the model in messages (default: the path, or "the model bytes").
        provider_options: options of the first (the target's) execution provider, e.g.
            ``{"device_id": 1}`` for CUDA; the other providers keep their defaults.

    Raises:
        error: onnxruntime cannot open the model.
        UnsafeModelError: model bytes that name external data (see ``runtimes.external_data``).
        TargetUnavailableError: the target is not installed, or onnxruntime fell back from it.
    """
    import onnxruntime as ort

    from edgeship.runtimes.external_data import refuse_external_data
    from edgeship.telemetry import quiet_onnxruntime

    quiet_onnxruntime(ort)  # once per process, for an onnxruntime imported before edgeship
    providers = providers or providers_for(target)
    src = model if isinstance(model, bytes) else os.fspath(model)
    name = what or ("the model bytes" if isinstance(model, bytes) else str(src))
    if isinstance(model, bytes):  # onnxruntime would resolve external data against the cwd
        refuse_external_data(model, name)
    try:
        per_provider = [dict(provider_options or {})] + [{} for _ in providers[1:]]
        session = ort.InferenceSession(src, options if options is not None else session_options(),
                                       providers=providers, provider_options=per_provider)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise error(f"onnxruntime could not open {name} with {', '.join(providers)}: {brief(e)}") from e
    active = session.get_providers()
    if providers[0] not in active:  # onnxruntime falls back to CPU silently; a check must not
        raise TargetUnavailableError(
            f"requested target {target} ({providers[0]}); onnxruntime opened the session with "
            f"{', '.join(active)} only. Check the libraries {providers[0]} needs (for CUDA: the CUDA "
            "and cuDNN versions onnxruntime-gpu was built for)."
        )
    return session


def io_specs(session: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A session's inputs and outputs as TensorSpecs: fixed sizes stay (0 included: onnxruntime
    holds a model to it), symbolic axes keep their name and unnamed ones become
    ``<tensor>_dim<axis>``; a type edgeship cannot feed keeps onnxruntime's own name (e.g.
    ``seq(tensor(float))``: see :func:`edgeship.spec.check_numeric`)."""
    def spec(args) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(a.name, ORT_DTYPES.get(a.type, a.type), tuple(
            d if (isinstance(d, int) and d >= 0) or (isinstance(d, str) and d) else f"{a.name}_dim{k}"
            for k, d in enumerate(a.shape or ()))) for a in args)

    return spec(session.get_inputs()), spec(session.get_outputs())


class OrtRunner(Runner):
    """Runs an ONNX model (a path or the model's bytes) with onnxruntime."""

    runtime = "onnxruntime"

    def __init__(self, spec: IOSpec, model: str | os.PathLike | bytes, *, target: str = "cpu",
                 providers: list[str] | None = None, threads: int | None = None, name: str | None = None,
                 options: Any = None, provider_options: dict[str, Any] | None = None,
                 runtime_options: dict[str, Any] | None = None):
        super().__init__(spec)
        self.runtime_options = dict(runtime_options or {})  # threads, spinning, opt_level (a candidate's)
        self.model: str | os.PathLike | bytes | None = model  # None once released (Model.__init__)
        self.target = target
        self.providers = providers
        self.threads = threads
        self.options = options  # onnxruntime.SessionOptions, else session_options(threads)
        self.provider_options = provider_options
        self.name = name or f"onnxruntime-{target}"
        self.session: Any = None
        self.output_names: list[str] = []

    def _load(self) -> None:
        if self.model is None:
            raise RuntimeError("the model bytes were released after the session opened; open a new runner")
        self.session = open_session(self.model, target=self.target, providers=self.providers,
                                    options=self.options if self.options is not None else self._options(),
                                    provider_options=self.provider_options)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _options(self) -> Any:
        return candidate_session_options(self.runtime_options, self.threads)

    @property
    def one_core(self) -> bool:
        """Whether this session runs on one thread (edgeship's options; a caller's: assume not)."""
        return self.options is None and (self.threads or self.runtime_options.get("threads")) == 1

    @property
    def spins_when_idle(self) -> bool:
        """Whether this session's idle intra-op workers spin after a run: onnxruntime's default with
        more than one thread (about 33 ms of a core after each run, measured here)."""
        from edgeship.host import usable_cpus

        if self.options is not None:  # a caller's SessionOptions: assume onnxruntime's default
            return True
        o = self.runtime_options
        return (self.threads or o.get("threads") or usable_cpus()) > 1 and o.get("spinning") is not False

    def timing_call(self, feeds: dict[str, np.ndarray]) -> tuple[Any, tuple]:
        self.load()
        return self.session.run, (self.output_names, feeds)

    def loaded_session(self) -> Any:
        """The open session (opening it first)."""
        self.load()
        return self.session

    def io_problems(self) -> list[str]:
        """Where the opened model's inputs and outputs disagree with the spec (names, dtypes,
        ranks, fixed sizes); empty when they agree. A symbolic axis in the model accepts any size."""
        problems = []
        inputs, outputs = io_specs(self.loaded_session())
        for label, specs, got in (("input", self.spec.inputs, inputs), ("output", self.spec.outputs, outputs)):
            if [t.name for t in specs] != [a.name for a in got]:
                problems.append(f"{label}s are {[a.name for a in got]} in the model, {[t.name for t in specs]} in the spec")
                continue
            for t, a in zip(specs, got):
                if a.dtype != t.dtype:
                    problems.append(f"{label} {t.name!r} is {a.dtype} in the model, {t.dtype} in the spec")
                elif label == "input" and (len(a.shape) != len(t.shape) or any(
                        isinstance(m, int) and m != d for m, d in zip(a.shape, t.shape))):
                    problems.append(f"input {t.name!r} has shape {list(a.shape)} in the model, {list(t.shape)} in the spec")
        return problems

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session else []

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        d = current_deadline()
        if d is None:
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        return dict(zip(self.output_names, run_ort(self.session.run, self.output_names, feeds, d, self.name)))

    def _close(self) -> None:
        self.session = None
