"""TorchScript runner: a traced/scripted (and frozen) module, called like eager PyTorch."""

from __future__ import annotations

from edgeship.runtimes.torch_eager import TorchEagerRunner


class TorchScriptRunner(TorchEagerRunner):
    """Runs a ``torch.jit.ScriptModule``; loads it from a path when given one."""

    name = "torchscript"

    def __init__(self, spec, module_or_path, name: str | None = None):
        super().__init__(spec, None, name)
        self.source = module_or_path

    def _load(self) -> None:
        import torch

        if isinstance(self.source, torch.jit.ScriptModule):
            self.module = self.source
        else:
            self.module = torch.jit.load(str(self.source), map_location="cpu").eval()
