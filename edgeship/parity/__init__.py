"""Parity: metrics, tolerances, collecting and judging outputs, reports, localisation, check, compare.

Numpy and onnxruntime only at import time (torch runners are handed in): ``edgeship check``
runs without torch.
"""
