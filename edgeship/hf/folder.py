"""A Hugging Face ``save_pretrained`` folder: what it holds, and the task it is exported for.

``read_folder(path)`` reads config.json (``architectures``, ``model_type``), finds the weights
(``model.safetensors``, its sharded index, or ``pytorch_model.bin`` only with ``trust_pickle``),
the tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json), the image processor
(preprocessor_config.json) and a sentence-transformers pooling (modules.json + its Pooling folder),
and guesses the task from the architecture's class name unless ``task`` is given. Only JSON is read
here: no torch, no transformers.

| architecture ends in            | task                     |
|---------------------------------|--------------------------|
| ``ForSequenceClassification``   | sequence-classification  |
| ``ForTokenClassification``      | token-classification     |
| ``ForImageClassification``      | image-classification     |
| ``...WithTeacher`` (DeiT)       | image-classification     |
| ``ForQuestionAnswering``        | question-answering       |
| ``ForMaskedLM``                 | fill-mask                |
| ``ForCausalLM``, ``LMHeadModel``| causal-lm                |
| ``Model`` (the bare encoder)    | feature-extraction       |
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.errors import ModelLoadError, SpecError, UnsafeModelError
from edgeship.fileio import read_bounded
from edgeship.hf.preprocess import MAX_TOKENIZER_BYTES

FEATURE_EXTRACTION = "feature-extraction"
SEQUENCE_CLASSIFICATION = "sequence-classification"
TOKEN_CLASSIFICATION = "token-classification"
IMAGE_CLASSIFICATION = "image-classification"
CAUSAL_LM = "causal-lm"
QUESTION_ANSWERING = "question-answering"
FILL_MASK = "fill-mask"
TASKS = (FEATURE_EXTRACTION, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, IMAGE_CLASSIFICATION, QUESTION_ANSWERING,
         FILL_MASK, CAUSAL_LM)
TEXT, VISION = "text", "vision"

# class-name suffix -> task, longest first
_SUFFIXES = (
    ("ForSequenceClassification", SEQUENCE_CLASSIFICATION),
    ("ForTokenClassification", TOKEN_CLASSIFICATION),
    ("ForImageClassification", IMAGE_CLASSIFICATION),
    ("ForImageClassificationWithTeacher", IMAGE_CLASSIFICATION),  # DeiT's distilled models
    ("ForQuestionAnswering", QUESTION_ANSWERING),
    ("ForMaskedLM", FILL_MASK),
    ("ForCausalLM", CAUSAL_LM),
    ("LMHeadModel", CAUSAL_LM),
    ("Model", FEATURE_EXTRACTION),
)
MAX_JSON_BYTES = 64 << 20  # config, tokenizer_config, preprocessor_config: far above real ones
SAFETENSORS, SAFETENSORS_INDEX, PICKLE_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
TASK_HELP = f"pass --task with one of {', '.join(TASKS)}"


@dataclass(frozen=True)
class HFFolder:
    """What a ``save_pretrained`` folder holds (read by :func:`read_folder`; stable API).

    Attributes:
        path: the folder.
        config: config.json, parsed.
        model_type: config.json's ``model_type``.
        architectures: config.json's ``architectures`` (may be empty).
        task: one of :data:`TASKS`, given or guessed.
        task_source: how the task was chosen (``--task``, or the class or file it was guessed from).
        modality: ``text`` or ``vision`` (which inputs the model takes).
        weights: the weights file: model.safetensors, its index (sharded), or pytorch_model.bin.
        safetensors: whether the weights are safetensors (False: a pickle, loaded with --trust-pickle).
        tokenizer: tokenizer.json, where there is one.
        tokenizer_config: tokenizer_config.json merged over special_tokens_map.json ({} where absent).
        preprocessor: preprocessor_config.json ({} where absent).
        pooling: a sentence-transformers folder's pooling: {"mode": "mean"|"cls"|"max", "normalize": bool,
            "max_seq_length": int | None}; None for other folders.
    """

    path: Path
    config: dict[str, Any]
    model_type: str
    architectures: tuple[str, ...]
    task: str
    task_source: str
    modality: str
    weights: Path
    safetensors: bool
    tokenizer: Path | None = None
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    preprocessor: dict[str, Any] = field(default_factory=dict)
    pooling: dict[str, Any] | None = None

    @property
    def labels(self) -> list[str] | None:
        """id2label as a list in id order, for the classification tasks (None otherwise or when
        the ids are not 0..n-1)."""
        if self.task not in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, IMAGE_CLASSIFICATION):
            return None
        table = self.config.get("id2label")
        if not isinstance(table, dict) or not table:
            return None
        try:
            by_id = {int(k): str(v) for k, v in table.items()}
        except (TypeError, ValueError):
            return None
        if sorted(by_id) != list(range(len(by_id))):
            return None
        return [by_id[i] for i in range(len(by_id))]


def is_hf_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a config.json (a ``save_pretrained`` folder)."""
    p = Path(path)
    return p.is_dir() and os.path.lexists(p / "config.json")  # read_folder says what is wrong with it


def present(path: Path, what: str) -> bool:
    """Whether the folder holds ``path``: False where nothing has that name, True for a regular file
    (or a link to one, as the hub's cache holds them).

    Raises:
        ModelLoadError: the name is a folder, FIFO, device or socket, or a link to nothing. Skipping
            it would drop part of the model without a word (a bundle without its tokenizer, say).
    """
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ModelLoadError(f"{what}: cannot read {path} ({e.strerror or e}); check the folder's permissions.") from e
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ModelLoadError(f"{what}: {path} is a link to nothing ({e.strerror or e}); replace it with the file "
                             "save_pretrained writes, or remove it.") from e
    if not stat.S_ISREG(mode):
        raise ModelLoadError(f"{what}: {path} is not a regular file (a folder, device, pipe or socket); replace it "
                             "with the file save_pretrained writes, or remove it.")
    return True


def read_json(path: Path, what: str, kind: type = dict) -> Any:
    """A JSON object (or, with ``kind=list``, a list) from a file of the folder, read without blocking
    and no further than :data:`MAX_JSON_BYTES`.

    Raises:
        ModelLoadError: not a regular file, too large, not JSON, or not of ``kind``.
    """
    raw = read_bounded(path, what, ModelLoadError, MAX_JSON_BYTES, "No configuration file is that large; check the folder.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ModelLoadError(f"{path} ({what}) cannot be read as JSON: {str(e)[:200]}; re-save the folder with "
                             "save_pretrained.") from e
    if not isinstance(data, kind):
        raise ModelLoadError(f"{path} ({what}) is not a JSON {'list' if kind is list else 'object'}; re-save the "
                             "folder with save_pretrained.")
    return data


def read_folder(path: str | Path, task: str | None = None, trust_pickle: bool = False) -> HFFolder:
    """Read a ``save_pretrained`` folder and choose its task.

    Args:
        path: the folder.
        task: one of :data:`TASKS`; None guesses it from config.json's ``architectures``.
        trust_pickle: accept a folder whose only weights are ``pytorch_model.bin`` (a pickle).

    Raises:
        ModelLoadError: no config.json, no weights, an unreadable file, or a task that cannot be
            guessed (the message names ``--task``).
        UnsafeModelError: only ``pytorch_model.bin`` and no ``trust_pickle``.
        SpecError: an unknown ``task``.
    """
    p = Path(path)
    if task is not None and task not in TASKS:
        raise SpecError(f"--task {task!r} is not a task edgeship exports; use one of {', '.join(TASKS)}.")
    if not p.is_dir():
        raise ModelLoadError(f"{p} is not a folder; pass a save_pretrained folder (config.json + model.safetensors).")
    if not present(p / "config.json", "the model's config"):
        raise ModelLoadError(
            f"{p} is a folder without config.json, so it is not a Hugging Face save_pretrained folder (and a folder "
            "is no other model format edgeship reads); pass the folder model.save_pretrained() wrote, or a model file.")
    config = read_json(p / "config.json", "the model's config")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(f"{p / 'config.json'} has no model_type; re-save the folder with save_pretrained "
                             "(transformers writes it), or export a state_dict with --arch module:factory.")
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ModelLoadError(f"{p / 'config.json'}: 'architectures' is not a list of class names.")
    weights, safe = weights_file(p, trust_pickle)
    tok_config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the tokenizer's config wins
        if present(p / name, "the tokenizer's config"):
            tok_config.update(read_json(p / name, "the tokenizer's config"))
    preprocessor = read_json(p / "preprocessor_config.json", "the image processor's config") \
        if present(p / "preprocessor_config.json", "the image processor's config") else {}
    pooling = _pooling(p)
    modality = VISION if _is_vision(config, preprocessor) else TEXT
    chosen, source = (task, "--task") if task else _guess_task(p, tuple(archs), model_type, pooling, modality)
    tokenizer = p / "tokenizer.json" if present(p / "tokenizer.json", "the tokenizer") else None
    size = tokenizer.stat().st_size if tokenizer is not None else 0
    if size > MAX_TOKENIZER_BYTES:
        raise ModelLoadError(f"{tokenizer} is {size:,} bytes, over the {MAX_TOKENIZER_BYTES >> 20} MiB a bundle's "
                             "tokenizer may take; check the folder.")
    return HFFolder(p, config, model_type, tuple(archs), chosen, source, modality, weights, safe, tokenizer,
                    tok_config, preprocessor, pooling)


def weights_file(p: Path, trust_pickle: bool) -> tuple[Path, bool]:
    """The weights file and whether it is safetensors.

    Raises:
        UnsafeModelError: pytorch_model.bin only, without ``trust_pickle``.
        ModelLoadError: no weights.
    """
    for name in (SAFETENSORS, SAFETENSORS_INDEX):
        if present(p / name, "the model's weights"):
            return p / name, True
    if present(p / PICKLE_BIN, "the model's weights") or present(p / "pytorch_model.bin.index.json", "the model's weights"):
        if not trust_pickle:
            raise UnsafeModelError(
                f"{p} holds its weights only as pytorch_model.bin, a pickle: loading it can run code from the file, "
                "so it was refused. Re-save the model with model.save_pretrained(dir) (safetensors, the default), "
                "or, only if you trust the file, pass --trust-pickle.")
        bin_ = p / PICKLE_BIN
        return (bin_ if bin_.is_file() else p / "pytorch_model.bin.index.json"), False
    raise ModelLoadError(f"{p} has config.json but no weights (model.safetensors, model.safetensors.index.json or "
                         "pytorch_model.bin); save them with model.save_pretrained(dir).")


def _is_vision(config: dict[str, Any], preprocessor: dict[str, Any]) -> bool:
    """A model that takes pixel_values: an image size and channel count in its config, or an image processor."""
    if "image_size" in config and "num_channels" in config:
        return True
    return "image_mean" in preprocessor and "vocab_size" not in config


def _guess_task(p: Path, archs: tuple[str, ...], model_type: str, pooling: dict | None, modality: str) -> tuple[str, str]:
    if pooling is not None:
        return FEATURE_EXTRACTION, "modules.json (a sentence-transformers folder)"
    for arch in archs:
        for suffix, task in _SUFFIXES:
            if arch.endswith(suffix):
                return task, f"architectures: {arch}"
    what = f"architectures {', '.join(archs)}" if archs else "no architectures"
    raise ModelLoadError(
        f"{p / 'config.json'} names {what} (model_type {model_type!r}), from which edgeship cannot tell the task; "
        f"{TASK_HELP} (feature-extraction exports the bare {modality} encoder), or save a state_dict and export it "
        "with --arch module:factory.")


def _pooling(p: Path) -> dict[str, Any] | None:
    """A sentence-transformers folder's pooling (modules.json: Transformer, Pooling[, Normalize])."""
    if not present(p / "modules.json", "the sentence-transformers modules"):
        return None
    modules = read_json(p / "modules.json", "the sentence-transformers modules", list)
    if not all(isinstance(m, dict) for m in modules):
        raise ModelLoadError(f"{p / 'modules.json'} is not a list of modules; re-save the sentence-transformers folder.")
    types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    pool = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pool is None:
        return None
    rel = str(pool.get("path", ""))
    folder = (p / rel).resolve()
    if not folder.is_relative_to(p.resolve()) or not present(folder / "config.json", "the sentence-transformers pooling"):
        raise ModelLoadError(f"{p / 'modules.json'} names the pooling folder {rel!r}, which does not hold a config.json "
                             "inside the model folder.")
    cfg = read_json(folder / "config.json", "the sentence-transformers pooling")
    modes = [m for m in ("cls_token", "mean_tokens", "max_tokens") if cfg.get(f"pooling_mode_{m}")]
    if len(modes) != 1 or cfg.get("pooling_mode_mean_sqrt_len_tokens") or cfg.get("pooling_mode_weightedmean_tokens") \
            or cfg.get("pooling_mode_lasttoken"):
        raise ModelLoadError(f"{folder / 'config.json'}: edgeship folds exactly one pooling of cls, mean or max tokens "
                             "into the graph; pass --task feature-extraction on the bare model folder and pool yourself.")
    extra = [t for t in types if t not in ("Transformer", "Pooling", "Normalize")]
    if extra:
        raise ModelLoadError(f"{p / 'modules.json'} has modules {', '.join(extra)} after the transformer, which edgeship "
                             "does not fold into the graph; export the transformer alone (a folder without modules.json).")
    max_len = None
    sbert = p / "sentence_bert_config.json"
    if present(sbert, "the sentence-transformers config"):
        value = read_json(sbert, "the sentence-transformers config").get("max_seq_length")
        max_len = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    return {"mode": modes[0].split("_")[0], "normalize": "Normalize" in types, "max_seq_length": max_len}
