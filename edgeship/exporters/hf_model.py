"""A ``save_pretrained`` folder as a loaded model: the module (transformers' Auto classes, local files
only), its inputs, dynamic axes and example inputs, and the pre-processing the bundle carries.

:func:`load_folder` gives the export pipeline a :class:`~edgeship.exporters.loading.LoadedModel`
like any other model file: the pipeline derives nothing else. Causal LMs are exported by
:mod:`edgeship.exporters.hf_decoder` (:func:`export_causal_lm`), which needs a KV-cache graph and a
generation loop; the runner hands them over before its stages run.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.config import LoadOptions
from edgeship.errors import BundleError, ModelLoadError, brief
from edgeship.hf.folder import (
    CAUSAL_LM,
    FEATURE_EXTRACTION,
    FILL_MASK,
    IMAGE_CLASSIFICATION,
    QUESTION_ANSWERING,
    SEQUENCE_CLASSIFICATION,
    TASK_HELP,
    TOKEN_CLASSIFICATION,
    VISION,
    HFFolder,
    read_folder,
)
from edgeship.hf.preprocess import TEXT_INPUTS, TOKENIZER_FILE, ImageInfo, TokenizerInfo, parse_image

if TYPE_CHECKING:
    from edgeship.exporters.loading import LoadedModel

log = logging.getLogger(__name__)

AUTO_CLASS = {
    FEATURE_EXTRACTION: "AutoModel",
    SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
    TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
    IMAGE_CLASSIFICATION: "AutoModelForImageClassification",
    QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
    FILL_MASK: "AutoModelForMaskedLM",
    CAUSAL_LM: "AutoModelForCausalLM",
}
SAMPLE_TEXTS = ("edgeship ships trained models to the edge.", "Hello world!")
# question-answering's example: (question, context) pairs, so token_type_ids hold both segments
SAMPLE_PAIRS = (("Where does edgeship ship models?", "edgeship ships trained models to the edge."),
                ("Who is greeted?", "Hello world!"))
MAX_POSITIONS = 1 << 20  # a model_max_length above this is transformers' "no limit" placeholder


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """huggingface_hub's offline mode on while transformers reads the folder: never a request (its HTTP
    hook refuses every one, and transformers' ``is_offline_mode()`` checks say so); its progress bars and
    info warnings are quiet meanwhile (edgeship's notes say what it did). Every call also passes
    ``local_files_only=True``.

    huggingface_hub reads the HF_HUB_OFFLINE environment variable once, at import, into
    ``huggingface_hub.constants.HF_HUB_OFFLINE``, which ``is_offline_mode()`` returns at each call
    (huggingface_hub 2.4, transformers 5.24): setting the variable here would do nothing, so that
    constant is set, and restored after."""
    from huggingface_hub import constants
    from transformers.utils import logging as hf_logging

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# config.json sizes under their many names (Llama/BERT, GPT-2, DistilBERT, T5-like, vision): each must be a
# positive whole number where it is set (image_size and patch_size may be [height, width])
SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "head_dim", "max_position_embeddings", "n_embd", "n_layer", "n_head", "n_positions",
             "dim", "hidden_dim", "n_layers", "n_heads", "d_model", "num_layers", "num_heads", "embedding_size",
             "image_size", "patch_size", "num_channels", "num_labels")
WEIGHT_SLACK = 8  # a config may describe this many times the weight files' bytes (fp32 of bf16, tied heads, ...)


def _positive(v: Any) -> bool:
    whole = isinstance(v, int) and not isinstance(v, bool) and v > 0
    return whole or (isinstance(v, list) and 0 < len(v) <= 3 and all(_positive(x) and not isinstance(x, list) for x in v))


def check_sizes(folder: HFFolder) -> None:
    """config.json's (and its text_config's and vision_config's) sizes must be positive whole numbers,
    and the fp32 weights they describe (embeddings and a dense layer's matrices: an underestimate) at
    most :data:`WEIGHT_SLACK` times the bytes of the folder's weight files, so a crafted or mistyped
    config (a vocab_size of 10**12) is refused before transformers allocates it.

    Raises:
        ModelLoadError: a size that is not a positive integer, or far more weights than the folder holds.
    """
    sections = [("", folder.config)] + [(f"{k}.", folder.config[k]) for k in ("text_config", "vision_config")
                                         if isinstance(folder.config.get(k), dict)]
    sizes: dict[str, int] = {}
    for prefix, c in sections:
        for key in SIZE_KEYS:
            v = c.get(key)
            if v is None:
                continue
            if not _positive(v):
                raise ModelLoadError(f"{folder.path / 'config.json'}: {prefix}{key} is {repr(v)[:40]}; it must be a "
                                     "positive whole number. Fix config.json (or re-save the model with "
                                     "save_pretrained).")
            sizes.setdefault(key, max(v) if isinstance(v, list) else v)
    vocab = sizes.get("vocab_size", 0)
    hidden = next((sizes[k] for k in ("hidden_size", "n_embd", "dim", "d_model") if k in sizes), 0)
    layers = next((sizes[k] for k in ("num_hidden_layers", "n_layer", "n_layers", "num_layers") if k in sizes), 0)
    inner = next((sizes[k] for k in ("intermediate_size", "hidden_dim") if k in sizes), 0)
    described = 4 * (vocab * hidden + layers * (2 * hidden * hidden + 3 * hidden * inner))
    image, patch, channels = sizes.get("image_size", 0), sizes.get("patch_size", 0), sizes.get("num_channels", 0)
    if patch:  # a ViT-like patch embedding and its position embeddings
        described += 4 * hidden * (channels * patch * patch + (image // patch) ** 2)
    files = [f for f in folder.path.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file()]
    held = sum(f.stat().st_size for f in files)
    if held and described > WEIGHT_SLACK * held + (64 << 20):
        raise ModelLoadError(f"{folder.path / 'config.json'}: its sizes (vocab_size {vocab}, hidden size {hidden}, "
                             f"{layers} layers) describe at least {described / 2**30:.1f} GiB of fp32 weights, "
                             f"but the folder's weight files hold {held / 2**20:.1f} MiB; config.json does not match the "
                             "weights. Re-save the model with save_pretrained.")


def build_model(folder: HFFolder) -> Any:
    """The folder's transformers model for its task, in eval mode, from the local files only.

    Raises:
        ModelLoadError: transformers does not know the model type, has no model of it for the task,
            or the weights do not fit (a head missing from the file would be random).
    """
    import torch
    import transformers

    check_sizes(folder)
    cls = getattr(transformers, AUTO_CLASS[folder.task])
    if not _known_type(folder.model_type) or not _builds(cls, folder.model_type):
        what = (f"transformers {transformers.__version__} has no {AUTO_CLASS[folder.task]} for model_type "
                f"{folder.model_type!r}" if _known_type(folder.model_type) else
                f"transformers {transformers.__version__} does not know model_type {folder.model_type!r} "
                "(edgeship never runs a folder's own code: trust_remote_code is not used)")
        raise ModelLoadError(
            f"{folder.path}: cannot build the model for task {folder.task} ({folder.task_source}): {what}. "
            f"{TASK_HELP[0].upper() + TASK_HELP[1:]} that this architecture has, or save a state_dict and export it "
            "with --arch module:factory.")
    with offline():
        try:
            # trust_remote_code=False: transformers' default (None) ASKS on stdin whether to run a folder's
            # own .py (config.json's auto_map); edgeship never runs it, whatever the answer would be.
            # dtype=float32: transformers 5 loads a folder in its saved dtype ("auto"), bf16/fp16 for most
            # hub models; the export, its parity reference and the quantizers work in float32.
            model, info = cls.from_pretrained(str(folder.path), local_files_only=True, trust_remote_code=False,
                                              dtype=torch.float32,
                                              use_safetensors=folder.safetensors, attn_implementation="eager",
                                              output_loading_info=True)
        except Exception as e:  # torch, safetensors, huggingface_hub and transformers errors of a bad folder
            if "ignore_mismatched_sizes" in str(e):  # its report went to a log the user does not see
                raise ModelLoadError(
                    f"{folder.path}: the weights' shapes do not match the sizes config.json gives (transformers refused "
                    "to load tensors of other shapes than the config describes). Fix config.json to the model's sizes, "
                    "or re-save the model with save_pretrained.") from e
            raise ModelLoadError(
                f"{folder.path}: transformers cannot build the model from the folder ({type(e).__name__}: "
                f"{brief(e, 300)}). Check config.json's sizes and types and the weights file (as save_pretrained "
                "wrote them), or re-save the model with save_pretrained.") from e
    missing = [k for k in info.get("missing_keys", []) if not (folder.task == FEATURE_EXTRACTION and k.startswith("pooler."))]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ModelLoadError(
            f"{folder.path}: the weights lack {', '.join(sorted(missing)[:5])}{more} for task {folder.task} "
            f"({folder.task_source}); transformers would fill them with random values. Pass the --task the folder "
            "was trained for (its config.json names architectures "
            f"{', '.join(folder.architectures) or 'none'}).")
    model.eval()
    for part in model.modules():  # tracing reads loss_function (a training-only property) and warns of a loss_type
        if isinstance(part, transformers.PreTrainedModel):
            part._loss_function = None
    return model


def _builds(auto_class: Any, model_type: str) -> bool:
    """Whether an Auto class builds ``model_type`` (its mapping's keys; True where a transformers
    version keeps that mapping elsewhere, and from_pretrained then says)."""
    names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
    return not isinstance(names, dict) or model_type in names


def _known_type(model_type: str) -> bool:
    from transformers import CONFIG_MAPPING

    return model_type in CONFIG_MAPPING


def _forward_params(model: Any) -> list[str]:
    return list(inspect.signature(model.forward).parameters)


def text_inputs(folder: HFFolder, model: Any) -> list[str]:
    """The text inputs the model takes, in TEXT_INPUTS order: token_type_ids only where the
    tokenizer gives them too (its model_input_names)."""
    params = _forward_params(model)
    names = folder.tokenizer_config.get("model_input_names")
    given = set(names) if isinstance(names, list) else set(TEXT_INPUTS)
    return [n for n in TEXT_INPUTS if n in params and (n != "token_type_ids" or n in given)]


def _token_id(tokenizer: Any, value: Any) -> tuple[str | None, int | None]:
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        return None, None
    return value, tokenizer.token_to_id(value)


def tokenizer_info(folder: HFFolder, inputs: list[str], tokenizer: Any) -> TokenizerInfo:
    """What the bundle records of the tokenizer: its pad token, padding side, inputs, limits."""
    cfg = folder.tokenizer_config
    size = folder.config.get("vocab_size")
    vocab = size if isinstance(size, int) and size > 0 else tokenizer.get_vocab_size(with_added_tokens=True)

    def config_id(key: str) -> int | None:  # old LLaMA configs say pad_token_id=-1 for none: keep ids in [0, vocab)
        v = folder.config.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab else None

    pad_token, pad_id = _token_id(tokenizer, cfg.get("pad_token"))
    if pad_id is None and config_id("pad_token_id") is not None and pad_token is None:
        pad_id = config_id("pad_token_id")
        pad_token = tokenizer.id_to_token(pad_id)
    limits = [cfg.get("model_max_length"), folder.config.get("max_position_embeddings"),
              (folder.pooling or {}).get("max_seq_length")]
    ok = [int(v) for v in limits if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < MAX_POSITIONS]
    ids = {k: _token_id(tokenizer, cfg.get(f"{k}_token"))[1] for k in ("bos", "eos")}
    for k in ids:
        if ids[k] is None:
            ids[k] = config_id(f"{k}_token_id")
    side, cut = (cfg.get(k, "right") for k in ("padding_side", "truncation_side"))
    return TokenizerInfo(TOKENIZER_FILE, pad_token, pad_id, side if side in ("left", "right") else "right",
                         tuple(inputs), min(ok) if ok else None, ids["bos"], ids["eos"],
                         cut if cut in ("left", "right") else "right")


def image_info(folder: HFFolder) -> ImageInfo:
    """The image processor's normalisation (preprocessor_config.json, else the config's image size
    and ImageNet's usual 0.5 constants, as ViTImageProcessor defaults to), checked as a bundle's is
    when it loads (a std of 0, a mean per channel that is not, a size of 0 or 10^9 are refused here,
    not shipped in a bundle that would not load).

    Raises:
        ModelLoadError: a value of the wrong type or range.
    """
    p, c = folder.preprocessor, folder.config

    def per_channel(v: Any, default: float, channels: int) -> list[float]:
        v = default if v is None else v
        return [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)] * channels

    try:
        channels = c.get("num_channels", 3)
        if not isinstance(channels, int) or isinstance(channels, bool) or not 0 < channels <= 64:
            raise ValueError(f"num_channels is {str(channels)[:40]!r}, not a whole number from 1 to 64")
        size: dict[str, Any] = p["size"] if isinstance(p.get("size"), dict) else {}
        side = c.get("image_size", 224)
        side = side[0] if isinstance(side, (list, tuple)) and side else side
        record = {"mean": per_channel(p.get("image_mean"), 0.5, channels), "std": per_channel(p.get("image_std"), 0.5, channels),
                  "height": size.get("height", size.get("shortest_edge", side)),
                  "width": size.get("width", size.get("shortest_edge", side)), "channels": channels,
                  "do_rescale": p.get("do_rescale", True), "rescale_factor": p.get("rescale_factor", 1 / 255),
                  "do_normalize": p.get("do_normalize", True)}
        return parse_image(record)
    except (TypeError, ValueError, OverflowError, BundleError) as e:
        detail = str(e).removeprefix("manifest.json ").removeprefix("preprocess: ").removeprefix("preprocess.image")
        detail = re.sub(r"[;.] [Tt]he bundle is corrupt or was edited\.?$", "", detail.strip()).strip(" :.")
        raise ModelLoadError(f"{folder.path / 'preprocessor_config.json'} (with config.json's image_size and "
                             f"num_channels) is not an image processor edgeship can carry: {detail[:200]}. Fix it to "
                             "the values the model was trained with (image_processor.save_pretrained(dir)).") from e


def _task_module(model: Any, folder: HFFolder, inputs: list[str]) -> Any:
    """The model with the task's outputs as a dict of tensors, taking exactly ``inputs`` by name."""
    import torch

    task, pooling = folder.task, folder.pooling

    def outputs(out: Any, mask: Any) -> dict[str, Any]:
        if task == QUESTION_ANSWERING:
            return {"start_logits": out.start_logits, "end_logits": out.end_logits}
        if task != FEATURE_EXTRACTION:
            return {"logits": out.logits}
        hidden = out.last_hidden_state
        if pooling is None:
            return {"last_hidden_state": hidden}
        if pooling["mode"] == "cls":
            pooled = hidden[:, 0]
        elif pooling["mode"] == "max":
            pooled = hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if pooling["normalize"]:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return {"token_embeddings": hidden, "sentence_embedding": pooled}

    if folder.modality == VISION:
        class Vision(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, pixel_values):
                return outputs(self.model(pixel_values=pixel_values), None)

        return Vision().eval()

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            kwargs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
            out = self.model(input_ids=input_ids, **{k: v for k, v in kwargs.items() if k in inputs})
            return outputs(out, attention_mask)

    return Text().eval()


def load_folder(path: Path, options: LoadOptions) -> LoadedModel:
    """A save_pretrained folder as the pipeline's :class:`LoadedModel`: the task's module, its
    example inputs (a short text pair through the folder's tokenizer, or an image of the model's
    size), dynamic axes (``batch`` for every input, ``seq`` shared by the text inputs, so the ids
    and their mask stay equal) and what the bundle carries (the tokenizer, task metadata).

    Raises:
        ModelLoadError: an unreadable folder, unknown architecture, missing tokenizer, or a causal LM
            (exported by :func:`export_causal_lm`, not here).
        UnsafeModelError: pytorch_model.bin only, without --trust-pickle.
    """
    import torch

    from edgeship.exporters.loading import HF_FOLDER, LoadedModel

    folder = read_folder(path, options.task, options.trust_pickle)
    if folder.task == CAUSAL_LM:
        raise ModelLoadError(f"{path} is a causal LM ({folder.task_source}): it is exported by the decoder export "
                             "(edgeship.exporters.hf_decoder), which the export command calls before loading.")
    model = build_model(folder)
    notes = [f"Hugging Face folder: {folder.architectures[0] if folder.architectures else folder.model_type} "
             f"({folder.model_type}) as {folder.task} ({folder.task_source}), built with transformers' "
             f"{AUTO_CLASS[folder.task]} from the local files"]
    if not folder.safetensors:
        notes.append("Hugging Face folder: weights read from pytorch_model.bin with --trust-pickle")
    meta: dict[str, Any] = {"task": task_record(folder)}
    files: tuple[tuple[str, Path], ...] = ()
    if folder.modality == VISION:
        info = image_info(folder)
        inputs = ["pixel_values"]
        g = torch.Generator().manual_seed(0)
        example: tuple = (torch.randn(2, info.channels, info.height, info.width, generator=g),)
        dynamic: tuple[tuple[str, int, str], ...] = (("pixel_values", 0, "batch"),)
        meta["preprocess"] = {"image": info.to_dict()}
        ranges: tuple[tuple[str, int, int], ...] = ()
    else:
        if folder.tokenizer is None:
            raise ModelLoadError(f"{path} has no tokenizer.json, which the bundle carries to turn text into ids; save "
                                 "the fast tokenizer beside the model (tokenizer.save_pretrained(dir)).")
        from tokenizers import Tokenizer

        from edgeship.hf.preprocess import TextEncoder, guarded

        inputs = text_inputs(folder, model)
        tok_path = str(folder.tokenizer)
        tok = tokenizer_info(folder, inputs, guarded(lambda: Tokenizer.from_file(tok_path), ModelLoadError,
                                                      f"{folder.tokenizer} is not a tokenizer.json it reads"))
        feeds = TextEncoder(folder.tokenizer.read_bytes(), tok, {n: "int64" for n in inputs}).encode(
            list(SAMPLE_PAIRS if folder.task == QUESTION_ANSWERING else SAMPLE_TEXTS))
        example = tuple(torch.from_numpy(feeds[n]) for n in inputs)
        dynamic = tuple((n, axis, sym) for n in inputs for axis, sym in ((0, "batch"), (1, "seq")))
        ranges = (("seq", 1, tok.max_length),) if tok.max_length else ()
        meta["preprocess"] = {"tokenizer": tok.to_dict()}
        files = ((TOKENIZER_FILE, folder.tokenizer),)
    module = _task_module(model, folder, inputs)
    return LoadedModel(Path(path), HF_FOLDER, module, module, example, tuple(notes), dynamic, ranges, tuple(inputs),
                       bundle_files=files, bundle_meta=meta)


def task_record(folder: HFFolder) -> dict[str, Any]:
    """The manifest's ``task``: what the model is for, and its labels for classification."""
    record: dict[str, Any] = {"name": folder.task, "model_type": folder.model_type,
                              "architectures": list(folder.architectures), "labels": folder.labels}
    if folder.pooling is not None:
        record["pooling"] = {"mode": folder.pooling["mode"], "normalize": folder.pooling["normalize"]}
    return record
