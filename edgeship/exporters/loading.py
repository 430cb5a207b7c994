"""Load ``model.pt`` by content (never by extension) into something edgeship can export.

| format                        | detected by                           | loads with                          |
|-------------------------------|---------------------------------------|-------------------------------------|
| TorchScript archive           | zip with ``code/`` or ``constants.pkl`` | ``torch.jit.load`` (runs TorchScript) |
| ExportedProgram (.pt2)        | zip with ``models/`` + ``archive_format`` | ``torch.export.load``, safe unpickling, pure ops only |
| state_dict / checkpoint dict  | ``torch.save`` zip or legacy pickle    | ``torch.load(weights_only=True)`` + ``--arch`` |
| whole pickled ``nn.Module``   | weights-only load refuses a global     | refused unless ``--trust-pickle``   |
| ONNX model                    | protobuf ``ModelProto`` with a graph   | torch stages skipped                |
| Hugging Face folder           | a folder with ``config.json``          | transformers' Auto classes (``edgeship.hf``) |

ONNX files have their external-data references checked (``onnx_guard``) before anything reads
them, and torch/onnx below their version floors (``floors``) are refused before they are used.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.config import LoadOptions
from edgeship.errors import ModelLoadError, UnsafeModelError, brief
from edgeship.exporters.program import program_dims, program_inputs, program_module, read_program, rename_reserved
from edgeship.exporters.usercode import build_arch, import_user_code

log = logging.getLogger(__name__)

TORCHSCRIPT, EXPORTED_PROGRAM, STATE_DICT, PICKLED_MODULE, ONNX = (
    "torchscript", "exported_program", "state_dict", "pickled_module", "onnx",
)
HF_FOLDER = "hf_folder"  # a Hugging Face save_pretrained folder (edgeship.exporters.hf_model)
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "module")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model: ``module`` is the eager reference (None for ONNX files)."""

    path: Path
    format: str
    module: object = None
    source: object = None  # what the exporters take: nn.Module, ScriptModule, ExportedProgram
    example_inputs: tuple = ()
    notes: tuple[str, ...] = ()
    # an ExportedProgram's own symbolic dims: (input, axis, symbol), and each symbol's size range
    dynamic_axes: tuple[tuple[str, int, str], ...] = ()
    ranges: tuple[tuple[str, int, int], ...] = ()
    input_names: tuple[str, ...] = ()  # an ExportedProgram's tensor inputs, in its order (example_inputs' names)
    # what the bundle carries beside the model (a Hugging Face folder's tokenizer: bundle path -> file)
    # and the manifest keys it adds ("task", "preprocess")
    bundle_files: tuple[tuple[str, Path], ...] = ()
    bundle_meta: dict = field(default_factory=dict)


def sniff_format(path: Path) -> str:
    """Name the file's format from its bytes.

    Raises:
        ModelLoadError: a missing, empty, directory, truncated or unrecognised file.
    """
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist; check the path.")
    if path.is_dir():
        raise ModelLoadError(
            f"{path} is a directory without config.json; pass a model file (TorchScript, ExportedProgram, state_dict, "
            "checkpoint or ONNX) or a Hugging Face save_pretrained folder (config.json + model.safetensors)."
        )
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a regular file (a device, pipe or socket); pass a model file.")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"model file {path} is empty (0 bytes); re-save the model.")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelLoadError(
                f"{path} starts like a zip archive (TorchScript, ExportedProgram or torch.save) but "
                f"cannot be read as one ({e}); the file is truncated or corrupt: save it again."
            ) from e
        parts = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if any(p.startswith("code/") for p in parts) or "constants.pkl" in parts:
            return TORCHSCRIPT
        if "archive_format" in parts or any(p.startswith("models/") for p in parts):
            return EXPORTED_PROGRAM
        if "data.pkl" in parts:
            return STATE_DICT  # a torch.save zip: a state_dict, checkpoint or a pickled module
        raise ModelLoadError(
            f"{path} is a zip archive but not one PyTorch wrote (no data.pkl, code/ or models/); "
            "pass a TorchScript, ExportedProgram, torch.save or ONNX file."
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return STATE_DICT  # a legacy (non-zip) torch.save pickle
    if head[:1] == b"\x08":
        model = _read_onnx(path)
        if model is not None:
            from edgeship.exporters.onnx_guard import check_external_data

            check_external_data(model, path)  # before anything reads external data
            return ONNX
    raise ModelLoadError(
        f"cannot recognise the format of {path} ({size} bytes, starting {head.hex()}): it is not "
        "a TorchScript archive, an ExportedProgram, a torch.save file or an ONNX model."
    )


def _read_onnx(path: Path):
    """The ``ModelProto`` (without external data) when the file parses as an ONNX model, else None."""
    from edgeship.exporters.floors import require

    require("onnx")
    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    return m if len(m.graph.node) > 0 or len(m.graph.output) > 0 else None


def load_model(path: str | Path, options: LoadOptions = LoadOptions()) -> LoadedModel:
    """Load ``path`` by content and put it in eval mode.

    Raises:
        ModelLoadError: unreadable or unsupported file, or an ``--arch`` that does not fit.
        UnsafeModelError: a pickled module without ``trust_pickle``.
    """
    from edgeship.hf.folder import is_hf_folder

    path = Path(path)
    if is_hf_folder(path):
        from edgeship.exporters.floors import require
        from edgeship.exporters.hf_model import load_folder

        require("torch")
        return load_folder(path, options)
    fmt = sniff_format(path)
    if fmt == ONNX:
        return LoadedModel(path, ONNX, notes=("ONNX input: TorchScript and ONNX export skipped",))
    from edgeship.exporters.floors import require

    require("torch")
    import torch

    if fmt == TORCHSCRIPT:
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelLoadError(f"torch.jit.load could not read {path}: {e}") from e
        notes = ["TorchScript archive: loading it executes its TorchScript code"]
        notes += _force_eval(module)
        return LoadedModel(path, TORCHSCRIPT, module, module, notes=tuple(notes))
    if fmt == EXPORTED_PROGRAM:
        ep = read_program(path, options)
        if not options.trust_ops:
            from edgeship.exporters.graph_ops import check_graph_ops

            check_graph_ops(ep, path)  # before anything runs the graph
        renamed = rename_reserved(ep)  # "meta" and the like: torch cannot unlift them under their own names
        try:
            module = ep.module()
        except Exception as e:
            raise ModelLoadError(
                f"{path}: torch could not turn the ExportedProgram back into a module for the eager reference "
                f"(ExportedProgram.module() failed: {brief(e)}); this is a torch limitation. Export the original "
                "nn.Module instead (a state_dict with --arch), or re-export the program with a newer torch.") from e
        notes = _eval_exported(module) + [
            f"ExportedProgram: {old!r} renamed {new!r} inside the program (torch.fx.GraphModule has an attribute "
            f"{old!r} of its own, and torch {torch.__version__.split('+')[0]} cannot unlift the program with it)"
            for old, new in renamed.items()]
        inputs = program_inputs(ep)
        module = program_module(ep, module)  # takes the tensor inputs positionally, keyword ones included
        dynamic, ranges = program_dims(ep)
        if dynamic:
            notes.append("ExportedProgram: keeps its own dynamic axes " + ", ".join(f"{n}:{a}={s}" for n, a, s in dynamic))
        return LoadedModel(path, EXPORTED_PROGRAM, module, ep, tuple(t for _, t in inputs), tuple(notes), dynamic, ranges,
                           tuple(n for n, _ in inputs))
    return _load_pickle(path, options)


def _force_eval(module) -> list[str]:
    was_training = any(m.training for m in module.modules()) if hasattr(module, "modules") else False
    module.eval()
    return ["model was in train mode: eval mode forced before export"] if was_training else []


def _eval_exported(module) -> list[str]:
    try:
        import torch.ao.quantization as q

        q.move_exported_model_to_eval(module)
        return ["ExportedProgram: dropout and batchnorm switched to eval behaviour"]
    except Exception:  # not all programs can be switched; they run as exported
        return ["ExportedProgram: runs with the train/eval behaviour it was exported with"]


def _load_pickle(path: Path, options: LoadOptions) -> LoadedModel:
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        trusted = False
    except pickle.UnpicklingError as e:
        if not options.trust_pickle:
            raise UnsafeModelError(
                f"{path} is a pickled Python object (most likely a whole nn.Module saved with "
                f"torch.save(model)); loading it would run arbitrary code, so it was refused. "
                f"The safe loader said: {brief(e)}. Either save a state_dict "
                "(torch.save(model.state_dict(), ...)) and pass --arch module:factory, save "
                "TorchScript or an ExportedProgram, or, only if you trust the file, pass "
                "--trust-pickle (with --import MODULE or --code FILE.py so its classes can be found)."
            ) from e
        import_user_code(options)
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e2:
            raise ModelLoadError(
                f"--trust-pickle: torch.load could not unpickle {path}: {e2}. If a class is not "
                "found, make it importable with --import MODULE or --code FILE.py."
            ) from e2
        trusted = True
    except Exception as e:
        raise ModelLoadError(
            f"torch.load could not read {path}: {brief(e)}; the file is truncated or corrupt."
        ) from e
    notes = ["whole pickled module loaded with --trust-pickle (executes code)"] if trusted else []
    if isinstance(obj, torch.nn.Module):
        notes += _force_eval(obj)
        return LoadedModel(path, PICKLED_MODULE, obj, obj, notes=tuple(notes))
    state_dict = extract_state_dict(obj, path)
    if not options.arch:
        raise ModelLoadError(
            f"{path} holds a state_dict ({len(state_dict)} tensors) and no architecture; pass "
            "--arch module:factory (a function or class that builds the nn.Module; --arch-kwargs "
            "'{\"num_classes\": 10}' for its arguments)."
        )
    module = build_arch(options)
    apply_state_dict(module, state_dict, options.arch)
    module.eval()  # a freshly built module starts in train mode: not worth a note
    return LoadedModel(path, STATE_DICT, module, module, notes=tuple(notes))


def extract_state_dict(obj, path: Path) -> dict:
    """Find the tensors dict in a state_dict or a training checkpoint; strip ``module.`` prefixes."""
    import torch

    def is_sd(d):
        return isinstance(d, dict) and d and all(isinstance(v, torch.Tensor) for v in d.values())

    sd = obj if is_sd(obj) else None
    if sd is None and isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            if is_sd(obj.get(key)):
                sd = obj[key]
                break
    if sd is None:
        kind = type(obj).__name__
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else ""
        raise ModelLoadError(
            f"{path} holds a {kind}{' with keys ' + keys if keys else ''}, not a state_dict or a "
            f"checkpoint with one of the keys {', '.join(_CHECKPOINT_KEYS)}."
        )
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def apply_state_dict(module, state_dict: dict, arch: str) -> None:
    """Load weights strictly; on mismatch list the first missing, unexpected and misshapen keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing in file", missing), ("unexpected in file", unexpected),
                             ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise ModelLoadError(
            f"the state_dict does not fit --arch {arch}: " + "; ".join(parts)
            + ". Check --arch and --arch-kwargs match the model that was trained."
        )
    module.load_state_dict(state_dict, strict=True)


def load_reference(path: Path, options: LoadOptions | None, recorded: dict | None, flag: str = "--against"):
    """The eager module of a PyTorch model file named beside a bundle (``check --against``,
    ``profile --compare-torch``).

    The ``--arch`` a bundle records is only quoted in the error, never imported: the manifest is
    not signed, and an edited one could name any callable (``os:system``).

    Raises:
        ModelLoadError: the file cannot be loaded (quoting the recorded ``--arch``), or is ONNX.
    """
    try:
        loaded = load_model(Path(path), options or LoadOptions())
    except ModelLoadError as e:
        arch = (recorded or {}).get("arch")
        if options is None and isinstance(arch, str) and "--arch" in str(e):
            kwargs = (recorded or {}).get("arch_kwargs")
            raise ModelLoadError(
                f"{e} The bundle records --arch {arch!r}"
                f"{f' with --arch-kwargs {json.dumps(kwargs)}' if kwargs else ''}; it is not used "
                "automatically, because a bundle is not trusted to name code to run: pass it "
                "yourself if you trust it."
            ) from e
        raise
    if loaded.module is None:
        raise ModelLoadError(f"{flag} {path} is an ONNX model; pass the PyTorch model the bundle came from.")
    return loaded.module
