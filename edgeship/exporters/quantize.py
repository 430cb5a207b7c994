"""Post-training quantization through onnxruntime.quantization and its float16 tools.

- dynamic: int8 weights, per-channel, for the ops onnxruntime quantizes dynamically
  (MatMul, and Gemm as MatMul; Attention; LSTM). Per-tensor lost accuracy on real transformers.
- static: QDQ, int8 activations and weights (S8S8), per-channel, after ``quant_pre_process``,
  calibrated with minmax, entropy or percentile.
- fp16: float16 weights and activations with fp32 inputs and outputs kept.
- int4: weight-only, block-wise int4 of MatMul weights (onnxruntime's MatMulNBits quantizer,
  round-to-nearest; symmetric or asymmetric with a zero point per block); activations stay fp32.

Nothing here re-implements what those tools do; edgeship chooses settings and proves results.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from edgeship.errors import QuantizationError, brief

log = logging.getLogger(__name__)

DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM"]
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
INT4_SCHEMES = ("sym", "asym")
NO_INT4_MATMUL = ("int4 quantizes MatMul nodes with a constant 2-D weight and this graph has none (Gemm, Conv "
                  "and MatMuls of two activations are not covered): use --quantize dynamic or static for it")
INT4_BLOCK_SIZE = 32  # onnxruntime-genai's default for CPU; MatMulNBits takes a power of two >= 16


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization prints and logs freely; keep it off the console (-v shows it)."""
    sink = io.StringIO()
    qlog = logging.getLogger("onnxruntime.quantization")
    root_level = logging.getLogger().level
    with contextlib.redirect_stdout(sink):
        qlog_level = qlog.level
        qlog.setLevel(logging.ERROR)
        logging.getLogger().setLevel(logging.ERROR)  # it also warns on the root logger
        try:
            yield
        finally:
            qlog.setLevel(qlog_level)
            logging.getLogger().setLevel(root_level)
    if sink.getvalue().strip():
        log.debug("onnxruntime.quantization said: %s", sink.getvalue()[-2000:])


def quantizable_nodes(path: Path, kind: str, graph=None) -> set[str]:
    """Names of the nodes quantization may touch for ``kind``: for dynamic int8 the ops in
    onnxruntime's integer-ops registry; for int4 MatMul; for static QDQ and fp16 every node (QDQ wraps more ops
    than its registry lists, Mul among them). ``graph``: the file's graph when already parsed."""
    import onnx
    from onnxruntime.quantization import registry

    ops = {"dynamic": set(registry.IntegerOpsRegistry) | {"Gemm"}, "int4": {"MatMul"}}.get(kind)
    nodes = (graph if graph is not None else onnx.load(str(path), load_external_data=False).graph).node
    return {n.name for n in nodes if n.name and (ops is None or n.op_type in ops)}


def count_quantized(path: Path) -> int:
    """How many integer / QDQ nodes a model holds (0 means quantization changed nothing)."""
    import onnx

    ops = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
           "QLinearMatMul", "DynamicQuantizeLSTM", "QAttention", "MatMulNBits"}
    return sum(n.op_type in ops for n in onnx.load(str(path), load_external_data=False).graph.node)


def without_initializer_shapes(src: Path, work: Path) -> Path:
    """``src``, or a copy of it in folder ``work`` without ``value_info`` entries for initializers.

    The dynamo exporter records every weight's shape in ``value_info``. onnxruntime before 1.32
    turns Gemm(transB=1) into MatMul by transposing the weight but leaves that entry as it was, and
    its own shape inference then fails ("Inferred shape and existing shape differ in dimension 0:
    (10) vs (5)"). Initializers carry their shapes, so the entries are redundant: dropping them
    changes nothing else.
    """
    import onnx

    model = onnx.load(str(src))
    weights = {i.name for i in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in weights]
    if len(keep) == len(model.graph.value_info):
        return src
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    out = work / f"{src.stem}.noinitshapes.onnx"
    onnx.save(model, str(out))
    return out


def build_dynamic(src: Path, dst: Path, exclude: Sequence[str] = ()) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    clean = src
    try:
        clean = without_initializer_shapes(src, dst.parent)
        with _quiet():
            quantize_dynamic(str(clean), str(dst), op_types_to_quantize=DYNAMIC_OPS, per_channel=True,
                             weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude) or None)
    except Exception as e:
        raise QuantizationError(f"dynamic int8 quantization failed: {brief(e)}") from e
    finally:
        if clean != src:
            clean.unlink(missing_ok=True)
    return dst


def preprocess(src: Path, dst: Path) -> Path:
    """``quant_pre_process``: symbolic shape inference and graph optimisation before QDQ."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    clean = without_initializer_shapes(src, dst.parent)
    try:
        with _quiet():
            quant_pre_process(str(clean), str(dst))
    except Exception as e:  # some graphs defeat symbolic shape inference: quantize without it
        log.info("quant_pre_process failed (%s); quantizing the model as it is", brief(e))
        with _quiet():
            try:
                quant_pre_process(str(clean), str(dst), skip_symbolic_shape=True)
            except Exception:
                import shutil

                shutil.copyfile(clean, dst)
    finally:
        if clean != src:
            clean.unlink(missing_ok=True)
    return dst


def build_static(src: Path, dst: Path, samples, method: str = "minmax", exclude: Sequence[str] = ()) -> Path:
    """Static QDQ int8 of an already pre-processed ``src``, calibrated on ``samples`` (feed dicts)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if method not in CALIBRATION_METHODS:
        raise QuantizationError(f"unknown --calibration-method {method!r}; use {', '.join(CALIBRATION_METHODS)}.")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples)

        def get_next(self):
            return next(self._it, None)

    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    try:
        with _quiet():
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calib, nodes_to_exclude=list(exclude) or None)
    except Exception as e:
        raise QuantizationError(f"static int8 quantization ({method}) failed: {brief(e)}") from e
    return dst


def build_fp16(src: Path, dst: Path, exclude: Sequence[str] = ()) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet():
            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                             node_block_list=list(exclude) or None)
        onnx.save(model, str(dst))
    except Exception as e:
        raise QuantizationError(f"fp16 conversion failed: {brief(e)}") from e
    return dst


def check_int4_settings(block_size: int, scheme: str) -> None:
    """MatMulNBits takes blocks of a power of two, at least 16 elements (its contrib-op spec)."""
    from edgeship.errors import SpecError

    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16 \
            or block_size & (block_size - 1):
        raise SpecError(f"--int4-block-size {block_size!r} is not a power of two of at least 16; "
                        "use 16, 32 (the default), 64, 128 or 256.")
    if scheme not in INT4_SCHEMES:
        raise SpecError(f"unknown --int4-scheme {scheme!r}; use sym (symmetric, the default) or asym "
                        "(a zero point per block).")


def int4_eligible(path: Path) -> list[str]:
    """The MatMul nodes int4 can quantize: a constant 2-D weight (an initializer) as input B.
    Shapes with leading 1s are squeezed by newer onnxruntime releases; edgeship counts the 2-D ones."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer if len(i.dims) == 2}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights]


def _nbits_quantizer():
    """onnxruntime's block-wise weight-only quantizer class: ``MatMulNBitsQuantizer`` (1.21+, 2/4/8
    bits, 4 by default) or, on 1.20, ``MatMul4BitsQuantizer`` with the same arguments."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        return MatMulNBitsQuantizer
    except ImportError:
        pass
    try:
        from onnxruntime.quantization.matmul_4bits_quantizer import MatMul4BitsQuantizer
        return MatMul4BitsQuantizer
    except ImportError as e:
        import onnxruntime

        raise QuantizationError(
            f"int4 needs onnxruntime's MatMulNBits quantizer, which onnxruntime {onnxruntime.__version__} does "
            f"not have ({brief(e)}); install onnxruntime>=1.20.1.") from e


def build_int4(src: Path, dst: Path, block_size: int = INT4_BLOCK_SIZE, scheme: str = "sym",
               exclude: Sequence[str] = (), accuracy_level: int | None = None) -> Path:
    """Weight-only int4 (MatMulNBits, round-to-nearest, ``block_size`` weights per scale along K).
    ``accuracy_level`` is MatMulNBits' attribute (None: onnxruntime's default, fp32 activations; 4:
    activations quantized to int8 on the fly, the faster CPU kernel the decoder export asks for)."""
    import onnx

    check_int4_settings(block_size, scheme)
    eligible = int4_eligible(src)
    if not eligible:
        raise QuantizationError(f"{NO_INT4_MATMUL}.")
    quantizer = _nbits_quantizer()
    try:
        with _quiet():
            level = {"accuracy_level": accuracy_level} if accuracy_level is not None and \
                "accuracy_level" in inspect.signature(quantizer).parameters else {}  # a quantizer without it: its default
            q = quantizer(onnx.load(str(src)), block_size=block_size, is_symmetric=scheme == "sym",
                          nodes_to_exclude=list(exclude), **level)
            q.process()
            model = q.model.model
        onnx.save(model, str(dst))
    except Exception as e:
        raise QuantizationError(f"int4 quantization (block {block_size}, {scheme}) failed: {brief(e)}") from e
    return dst


def weight_bytes(path: Path) -> int:
    """Bytes of a model's initializers (its weights) as stored: packed int4 counts half a byte a
    weight, plus its scales and zero points."""
    import onnx
    from onnx import numpy_helper

    total = 0
    for t in onnx.load(str(path), load_external_data=False).graph.initializer:
        if t.HasField("raw_data"):
            total += len(t.raw_data)
        elif t.data_location == onnx.TensorProto.EXTERNAL:
            total += int(next((e.value for e in t.external_data if e.key == "length"), 0))
        else:
            total += numpy_helper.to_array(t).nbytes
    return total
