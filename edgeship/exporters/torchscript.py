"""TorchScript stage: trace (script as fallback), then freeze."""

from __future__ import annotations

import logging
import warnings

from edgeship.errors import ExportError

log = logging.getLogger(__name__)


def to_torchscript(module, example_args: tuple):
    """Return ``(script_module, how)``: the module traced (or scripted) and frozen.

    A module that already is TorchScript is only frozen.

    Raises:
        ExportError: neither tracing nor scripting worked.
    """
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return _freeze(module), "loaded"
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for how in ("trace", "script"):
            try:
                if how == "trace":
                    sm = torch.jit.trace(module, example_args, check_trace=False, strict=False)
                else:
                    sm = torch.jit.script(module)
                return _freeze(sm.eval()), how
            except Exception as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                errors.append(f"{how}: {first}")
    raise ExportError("TorchScript failed; " + "; ".join(errors))


def _freeze(sm):
    import torch

    try:
        return torch.jit.freeze(sm.eval())
    except Exception as e:  # freezing is an optimisation; an unfreezable module still runs
        log.debug("torch.jit.freeze failed, keeping the unfrozen module: %s", e)
        return sm
