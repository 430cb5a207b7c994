"""What one profiled configuration times: a :class:`Harness` whose ``call(*args)`` is exactly
one inference with its inputs prepared once, outside the loop:

- onnxruntime on CPU: ``session.run(output_names, feeds)`` with the feeds dict built once;
- onnxruntime on CUDA: ``session.run_with_iobinding(binding)``, the inputs copied to the
  device once and the outputs bound to the device, so no host/device copy is timed; onnxruntime
  synchronises the device at the end of each run, so the time covers the GPU work;
- OpenVINO: the runner's own ``run`` (an infer request of the calling thread);
- PyTorch: ``module(*tensors)`` under ``torch.inference_mode()``, tensors made once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship.errors import ModelLoadError, SpecError


def _noop() -> None:
    pass


@dataclass
class Harness:
    """One opened configuration: ``call(*args)`` runs one inference; ``close()`` releases it."""

    call: Callable
    args: tuple
    providers: tuple[str, ...] = ()
    io_binding: bool = False
    close: Callable[[], None] = _noop
    session: Any = None  # the onnxruntime session, for end_profiling()


def ort_harness(model, target: str, providers: list[str], threads: int, feeds: dict,
                profile_prefix: str | None = None, options: dict | None = None) -> Harness:
    """Open an onnxruntime session for ``model`` (bytes or path) and prepare its timed call;
    ``options``: a candidate's ``spinning`` and ``opt_level`` (``threads`` wins over theirs)."""
    from edgeship.runtimes.ort import bind_io, candidate_session_options, open_session

    so = candidate_session_options(options or {}, threads, profile_prefix=profile_prefix)
    session = open_session(model, target=target, providers=providers, error=ModelLoadError, options=so, what="the model")
    from edgeship.runtimes.ort import io_specs
    from edgeship.spec import validate_feeds

    try:  # before a timed call would fail inside onnxruntime
        validate_feeds(io_specs(session)[0], feeds)
    except SpecError as e:
        raise ModelLoadError(f"the model does not take the feeds made from its io spec ({str(e).rstrip('.')}): the "
                             "bundle's model file is not the manifest's model (it was edited). Re-export the bundle.") from e
    active = tuple(session.get_providers())
    names = [o.name for o in session.get_outputs()]
    if target != "cpu" and "CUDAExecutionProvider" in active:
        binding, keep = bind_io(session, feeds, names, "cuda")
        return Harness(session.run_with_iobinding, (binding,), active, True, close=keep.clear, session=session)
    return Harness(session.run, (names, feeds), active, session=session)


def openvino_harness(model, precision: str, threads: int, feeds: dict) -> Harness:
    """Compile ``model`` (its bytes) with OpenVINO at ``precision`` and prepare its timed call."""
    from edgeship.runtimes.openvino import OpenVINORunner
    from edgeship.spec import IOSpec

    if not isinstance(model, bytes):
        raise SpecError("OpenVINO takes the model's bytes; a model with external data cannot run on it.")
    runner = OpenVINORunner(IOSpec((), ()), model, precision=precision, options={"threads": threads},
                            error=ModelLoadError, what="the model").load()
    call, args = runner.timing_call(feeds)
    return Harness(call, args, ("OpenVINO:CPU",), close=runner.close)


def torch_harness(load_module: Callable, threads: int, feeds: dict, input_names: list[str]) -> Harness:
    """Load a PyTorch module (eager or TorchScript) and prepare ``module(*tensors)`` under
    ``inference_mode`` with ``threads`` intra-op threads; ``close()`` restores both."""
    from contextlib import ExitStack

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    stack = ExitStack()
    try:
        module = load_module()
        stack.enter_context(torch.inference_mode())
        args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names)
    except BaseException:
        stack.close()
        torch.set_num_threads(previous)
        raise

    def close() -> None:
        stack.close()
        torch.set_num_threads(previous)

    return Harness(module, args, ("torch-cpu",), close=close)
