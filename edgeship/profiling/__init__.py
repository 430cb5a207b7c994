"""The latency profiler: timing loop and harnesses, sources, the baseline gate, report.html.

Torch-free at import time: the PyTorch rows of ``--compare-torch`` import torch themselves.
"""
