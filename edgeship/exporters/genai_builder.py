"""A causal LM's decoder graph from onnxruntime-genai's model builder (``onnxruntime_genai.models.builder``,
the ``[genai]`` extra), fp32 for CPU: GroupQueryAttention, fused QKV and fused RMSNorms, the same I/O names
as :mod:`edgeship.exporters.hf_decoder`'s torch.onnx graph but no ``position_ids`` input (positions come
from the attention mask). Measured in benchmark B9 (4-layer, hidden-256 Llama-style): edgeship's loop on
this graph ran 1.39x onnxruntime-genai's decode tokens/s, on the torch.onnx graph 0.97x.

The builder is called through its Python API (``parse_extra_options`` + ``create_model``) on the local
folder only, with the Hugging Face hub offline, in a temporary folder; its external data is inlined into
one file and the cache's symbolic head dimension (``kv_cache_dim``) fixed to the model's, so
:func:`edgeship.generate.decoder_layout` reads it as any decoder graph.

What it cannot do: left padding. GroupQueryAttention takes the attention mask only as per-row lengths,
so a batch padded on the left gives wrong tokens for its shorter prompts (measured); the bundle records
``generation.padded_batches: false`` and :func:`edgeship.generate.generate` runs prompts of different
lengths one at a time on it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from edgeship.errors import ExportError, brief
from edgeship.spec import IOSpec

AXES = {"batch_size": "batch", "sequence_length": "sequence", "past_sequence_length": "past_sequence",
        "total_sequence_length": "total_sequence"}  # the builder's axis names -> the torch.onnx graph's


class BuilderUnavailable(ExportError):
    """The builder is not installed, or cannot build this architecture; the export falls back to torch.onnx."""


def builder_version() -> str:
    """onnxruntime-genai's version, or BuilderUnavailable when it (or its builder) is not installed."""
    try:
        import onnxruntime_genai
        from onnxruntime_genai.models import builder  # noqa: F401  (the builder needs its own imports)
    except Exception as e:  # ImportError, or the builder's own imports failing
        raise BuilderUnavailable(f"onnxruntime-genai's model builder is not importable ({brief(e)}); "
                                 "install edgeship[genai] to build the graph with it") from e
    return str(getattr(onnxruntime_genai, "__version__", "?"))


@contextlib.contextmanager
def _offline() -> Any:
    """HF_HUB_OFFLINE=1 (environment and huggingface_hub's constant) while the builder runs."""
    import huggingface_hub.constants as hc  # transformers' own dependency

    old = os.environ.get("HF_HUB_OFFLINE")
    was = hc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
        hc.HF_HUB_OFFLINE = was


def build_decoder_onnx(folder: Path, path: Path, head_dim: int) -> IOSpec:
    """The builder's fp32 CPU graph of the save_pretrained ``folder`` as one ONNX file at ``path``.

    Raises:
        BuilderUnavailable: not installed, or the builder failed (unsupported architecture, missing
            tokenizer, ...): the message says why.
    """
    import onnx

    from edgeship.exporters.hf_decoder import spec_of

    builder_version()
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    with tempfile.TemporaryDirectory(prefix="edgeship-genai-") as tmp:
        out, cache = Path(tmp) / "out", Path(tmp) / "cache"
        log = io.StringIO()
        try:
            with _offline(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                options = parse_extra_options(str(folder), str(folder), str(out), "fp32", "cpu", str(cache), [])
                create_model(str(folder), str(folder), str(out), "fp32", "cpu", str(cache), **options)
            m = onnx.load(str(out / "model.onnx"))  # with its external data
        except Exception as e:  # the builder's own failures (NotImplementedError for an architecture, ...)
            raise BuilderUnavailable(f"onnxruntime-genai's model builder failed on {folder.name}: {brief(e)}") from e
    for vi in [*m.graph.input, *m.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param == "kv_cache_dim":
                d.dim_value = head_dim
            elif d.dim_param in AXES:
                d.dim_param = AXES[d.dim_param]
    for values in (m.graph.input, m.graph.output):  # layer by layer, key then value, as the torch.onnx graph
        ordered = sorted(values, key=lambda v: _order(v.name))
        del values[:]
        values.extend(ordered)
    try:
        onnx.save(m, str(path))  # one file, as the torch.onnx graph (protobuf's 2 GB limit)
    except Exception as e:
        raise BuilderUnavailable(f"onnxruntime-genai's model builder graph of {folder.name} cannot be saved as "
                                 f"one file: {brief(e)}") from e
    return spec_of(path)


def _order(name: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(?:past_key_values|present)\.(\d+)\.(key|value)", name)
    return (1, int(m.group(1)), m.group(2) == "value") if m else (0, 0, 0)


def graph_ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
