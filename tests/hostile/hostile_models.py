"""Models for the hostile suite (``--arch tests/hostile/hostile_models.py:NAME``)."""

import torch
import torch.nn as nn


class Bessel(nn.Module):
    """Uses an op neither ONNX exporter translates (torch 2.13: aten::special_bessel_j0)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.special.bessel_j0(self.fc(x))


class TinyNoise(nn.Module):
    """Nondeterministic, but by far less than the fp32 tolerance: exported, and reported."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) + torch.rand(1) * 1e-6


class TailSlice(nn.Module):
    """int64 token ids sliced open-ended (``ids[:, 1:]``, ``ids[:, -1:]``) on a dynamic axis."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 4)

    def forward(self, ids):
        return self.emb(ids[:, 1:]).sum(1) + ids[:, -1:].float()
