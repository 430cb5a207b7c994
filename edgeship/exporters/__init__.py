"""Exporters: loading model files, TorchScript, ONNX export and graph optimisation."""
