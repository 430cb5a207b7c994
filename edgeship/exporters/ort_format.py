"""ONNX -> ORT format for ONNX Runtime Mobile, with onnxruntime's own converter.

:func:`convert` runs ``onnxruntime.tools.convert_onnx_models_to_ort`` (the Python API of
``python -m onnxruntime.tools.convert_onnx_models_to_ort``) on a folder of ``NAME.onnx`` files and
returns ``NAME.ort`` per model and one ``required_operators.config`` for all of them: the operator
list a reduced-operator onnxruntime build takes (``build.py --include_ops_by_config``).

Choices (onnxruntime's guidance in the converter's help and its "ORT model format" page):

- **Fixed** optimisation style: the graph is optimised when converted (level ``all``) and saved as
  it will run on onnxruntime's CPU provider, the provider of a plain mobile app. The **Runtime** style
  (``NAME.with_runtime_opt.ort``) is for NNAPI/CoreML, whose share of the graph is only known on the
  device, and its saved optimisations are replayed only with ``session.enable_saved_runtime_optimizations``,
  which onnxruntime says to enable for trusted models only; an app that wants NNAPI/CoreML converts the
  bundle's ``.onnx`` itself (docs/mobile.md).
- ``target_platform="arm"``: phones are ARM; it leaves out the x86-only NCHWc layout and lets QDQ int8
  fuse to int8 kernels (``session.qdqisint8allowed``), as ARM's kernels want. The file still runs on
  x86 (the parity check here runs it).
- No type reduction: the config lists operators, which every reduced build takes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
from pathlib import Path

from edgeship.errors import ExportError, brief

log = logging.getLogger(__name__)

CONFIG = "required_operators.config"
STYLE = "Fixed"
TARGET_PLATFORM = "arm"
LEVEL = "all"


def convert(models: dict[str, Path], out: Path) -> tuple[dict[str, Path], Path]:
    """Convert ``models`` (name -> .onnx file) to ORT format in folder ``out``.

    Returns:
        ``({name: out/NAME.ort}, out/required_operators.config)``; the config's comment lines name
        the files as ``models/NAME.ort`` (the bundle's paths, not this machine's).

    Raises:
        ExportError: the converter cannot run (no onnx package) or fails on a model; the message
            names the model and the way out (export without ``--target mobile``).
    """
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    except ImportError as e:
        raise ExportError(f"--target mobile needs onnxruntime's ORT-format converter, which did not import "
                          f"({brief(e)}); pip install 'edgeship[export]' (it needs the onnx package).") from e
    src = out / "onnx"
    src.mkdir(parents=True, exist_ok=True)
    for name, path in models.items():
        shutil.copyfile(path, src / f"{name}.onnx")
    said = io.StringIO()
    quiet = logging.getLogger("ort_format_model.utils")  # it logs the work folder's config path at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(said):  # the converter prints each step
            convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle[STYLE]],
                                       target_platform=TARGET_PLATFORM)
    except Exception as e:  # the converter raises whatever onnxruntime or onnx raised
        failed = re.findall(r"Error converting .*?([^/\\]+)\.onnx", said.getvalue())
        which = f" {failed[0]}" if failed else ""
        raise ExportError(
            f"--target mobile: onnxruntime could not convert the{which} variant to the ORT format ({brief(e)}). "
            "Export without --target mobile (the .onnx variants run on onnxruntime everywhere), or pick the variants "
            "to ship with --quantize and try again.") from e
    finally:
        quiet.setLevel(level)
        shutil.rmtree(src, ignore_errors=True)
    converted = {name: out / f"{name}.ort" for name in models}
    missing = [n for n, p in converted.items() if not p.is_file()]
    config = out / CONFIG
    if missing or not config.is_file():
        what = f"ORT file for {', '.join(missing)}" if missing else CONFIG
        raise ExportError(f"--target mobile: onnxruntime's converter wrote no {what}; "
                          "export without --target mobile, and report this with the model.")
    lines = config.read_text().splitlines()
    config.write_text("".join(
        (f"# - models/{Path(line[4:].strip()).name}\n" if line.startswith("# - ") else line + "\n") for line in lines))
    log.debug("ORT converter: %s", said.getvalue())
    return converted, config


def operators(config: Path) -> list[str]:
    """The operators a config lists, ``domain;opset;Op`` each (comments left out)."""
    out = []
    for line in config.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, opset, ops = line.split(";", 2)
            out += [f"{domain};{opset};{op}" for op in ops.split(",") if op]
    return out
