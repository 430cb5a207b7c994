"""onnxruntime runner for any execution provider list (CPU, CUDA, TensorRT, ...). Torch-free."""

from __future__ import annotations

import logging
import os

import numpy as np

from edgeship.errors import ExportError, TargetUnavailableError
from edgeship.runtimes.base import Runner
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)

TARGET_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


_ORT_DTYPES = {f"tensor({k})": v for k, v in {
    "float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool"}.items()}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(target: str) -> list[str]:
    """Map a target (``cpu``, ``cuda``, ``tensorrt`` or a provider name) to a provider list.

    Raises:
        TargetUnavailableError: the target's first provider is not installed.
    """
    providers = TARGET_PROVIDERS.get(target.lower())
    if providers is None:
        providers = [target] if target.endswith("ExecutionProvider") else None
    if providers is None:
        raise TargetUnavailableError(
            f"unknown target {target!r}; use cpu, cuda, tensorrt or an onnxruntime provider name "
            "such as OpenVINOExecutionProvider."
        )
    have = available_providers()
    if providers[0] not in have:
        gpu = "CUDA" in providers[0] or "Tensorrt" in providers[0]
        hint = "install onnxruntime-gpu in place of onnxruntime" if gpu else "install an onnxruntime build that has it"
        raise TargetUnavailableError(
            f"requested target {target} ({providers[0]}); available: {', '.join(have)}; {hint}."
        )
    return providers


def session_options(threads: int | None = None, *, profile_prefix: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # errors reach users through EdgeshipError, not ORT's log
    # A default session ran like a one-thread session on these machines: be explicit.
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


class OrtRunner(Runner):
    """Runs an ONNX model (a path or the model's bytes) with onnxruntime."""

    def __init__(self, spec: IOSpec, model: str | os.PathLike | bytes, *, target: str = "cpu",
                 providers: list[str] | None = None, threads: int | None = None, name: str | None = None):
        super().__init__(spec)
        self.model = model
        self.target = target
        self.providers = providers
        self.threads = threads
        self.name = name or f"onnxruntime-{target}"
        self.session = None

    def _load(self) -> None:
        import onnxruntime as ort

        providers = self.providers or providers_for(self.target)
        model = self.model if isinstance(self.model, bytes) else os.fspath(self.model)
        try:
            self.session = ort.InferenceSession(model, session_options(self.threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            where = "the model bytes" if isinstance(self.model, bytes) else str(self.model)
            raise ExportError(
                f"onnxruntime could not open {where} with {providers}: {e}. The ONNX file is "
                "invalid or uses an op this onnxruntime does not support; try another --opset or "
                "--exporter."
            ) from e
        active = self.session.get_providers()
        if providers[0] not in active:  # onnxruntime falls back to CPU silently; a check must not
            self.session = None
            raise TargetUnavailableError(
                f"requested target {self.target} ({providers[0]}); onnxruntime opened the session with "
                f"{', '.join(active)} only. Check the libraries {providers[0]} needs (for CUDA: the CUDA "
                "and cuDNN versions onnxruntime-gpu was built for)."
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run

    def io_problems(self) -> list[str]:
        """Where the opened model's inputs and outputs disagree with the spec (names, dtypes,
        ranks, fixed sizes); empty when they agree. A symbolic axis in the model accepts any size."""
        problems = []
        for label, specs, args in (("input", self.spec.inputs, self.session.get_inputs()),
                                   ("output", self.spec.outputs, self.session.get_outputs())):
            got = {a.name: a for a in args}
            if [t.name for t in specs] != [a.name for a in args]:
                problems.append(f"{label}s are {[a.name for a in args]} in the model, {[t.name for t in specs]} in the spec")
                continue
            for t in specs:
                a = got[t.name]
                dtype = _ORT_DTYPES.get(a.type, a.type)
                if dtype != t.dtype:
                    problems.append(f"{label} {t.name!r} is {dtype} in the model, {t.dtype} in the spec")
                elif label == "input" and (len(a.shape) != len(t.shape) or any(
                        isinstance(m, int) and m != d for m, d in zip(a.shape, t.shape))):
                    problems.append(f"input {t.name!r} has shape {list(a.shape)} in the model, {list(t.shape)} in the spec")
        return problems

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session else []

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._run(self.output_names, feeds)))

    def _close(self) -> None:
        self.session = None
