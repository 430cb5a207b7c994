"""Pre-processing that travels in a bundle: the tokenizer and the image normalisation.

Torch-free and transformers-free: text goes through the ``tokenizers`` library (the ``text`` extra:
``pip install 'edgeship[text]'``), images through numpy. The manifest records (``preprocess``)::

    "tokenizer": {"file": "preprocess/tokenizer.json", "pad_token": "[PAD]", "pad_id": 0,
                  "padding_side": "right", "model_input_names": ["input_ids", ...],
                  "max_length": 512, "bos_id": null, "eos_id": null, "truncation_side": "right"}
    "image": {"mean": [...], "std": [...], "height": 224, "width": 224, "channels": 3,
              "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true}

Every value is checked here before use (:func:`parse_preprocess`): a bundle may be crafted.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship.errors import BundleError, InferenceError, SpecError

TOKENIZER_FILE = "preprocess/tokenizer.json"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_TOKENIZER_BYTES = 64 << 20  # a 250k-token vocabulary with merges is ~20 MB
MAX_ID = 1 << 31
MAX_TEXTS = 1 << 16
MAX_CHARS = 1_000_000  # characters per encode call (all texts together)
MAX_GROWTH = 16  # how many times its normalizers' Replace rules may lengthen a text, at worst
MAX_DEPTH = 32  # nesting of normalizer Sequences
UNCAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit)
MISSING_TOKENIZERS = ("this bundle's tokenizer needs the `tokenizers` library (torch-free): "
                      "pip install 'edgeship[text]' (or pip install tokenizers).")


@dataclass(frozen=True)
class TokenizerInfo:
    """The manifest's ``preprocess.tokenizer``, checked."""

    file: str
    pad_token: str | None
    pad_id: int | None
    padding_side: str
    model_input_names: tuple[str, ...]
    max_length: int | None
    bos_id: int | None
    eos_id: int | None
    truncation_side: str = "right"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "pad_token": self.pad_token, "pad_id": self.pad_id, "padding_side": self.padding_side,
                "model_input_names": list(self.model_input_names), "max_length": self.max_length,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "truncation_side": self.truncation_side}


@dataclass(frozen=True)
class ImageInfo:
    """The manifest's ``preprocess.image``, checked: what the image processor does before the model."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    height: int
    width: int
    channels: int
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "height": self.height, "width": self.width,
                "channels": self.channels, "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
                "do_normalize": self.do_normalize}


def _int(value: Any, what: str, lo: int = 0, hi: int = MAX_ID, none: bool = True) -> int | None:
    if value is None and none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value < hi:
        raise BundleError(f"manifest.json preprocess: {what} is {str(value)[:60]!r}, not an integer from {lo} to {hi - 1}; "
                          "the bundle is corrupt or was edited.")
    return value


def _floats(value: Any, what: str, n: int) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
        raise BundleError(f"manifest.json preprocess: {what} is not a list of {n} finite numbers; the bundle is corrupt "
                          "or was edited.")
    return tuple(float(x) for x in value)


def parse_tokenizer(d: Any, files: dict[str, Any], input_names: Sequence[str]) -> TokenizerInfo:
    """``preprocess.tokenizer`` from an unverified manifest.

    Raises:
        BundleError: a field of the wrong type or range, a file that is not the listed tokenizer, or
            input names the model does not take.
    """
    if not isinstance(d, dict):
        raise BundleError("manifest.json preprocess.tokenizer is not an object; the bundle is corrupt or was edited.")
    file = d.get("file")
    if file != TOKENIZER_FILE or file not in files:
        raise BundleError(f"manifest.json preprocess.tokenizer names the file {str(file)[:80]!r}; a bundle's tokenizer is "
                          f"{TOKENIZER_FILE}, listed among its files. The bundle is corrupt or was edited.")
    if files[file].get("size", 0) > MAX_TOKENIZER_BYTES:
        raise BundleError(f"manifest.json lists {file} at {files[file]['size']:,} bytes, over the {MAX_TOKENIZER_BYTES >> 20} "
                          "MiB a tokenizer may take; refused.")
    side = d.get("padding_side", "right")
    if side not in ("left", "right"):
        raise BundleError(f"manifest.json preprocess.tokenizer.padding_side is {str(side)[:40]!r}, not 'left' or 'right'.")
    cut = d.get("truncation_side", "right")
    if cut not in ("left", "right"):
        raise BundleError(f"manifest.json preprocess.tokenizer.truncation_side is {str(cut)[:40]!r}, not 'left' or "
                          "'right'.")
    names = d.get("model_input_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
            or not set(names) <= set(TEXT_INPUTS) or not set(names) <= set(input_names) or "input_ids" not in names:
        raise BundleError(f"manifest.json preprocess.tokenizer.model_input_names is {str(names)[:120]}; it must list "
                          f"input_ids and only inputs of the model among {', '.join(TEXT_INPUTS)}.")
    pad_token = d.get("pad_token")
    if pad_token is not None and (not isinstance(pad_token, str) or len(pad_token) > 200):
        raise BundleError("manifest.json preprocess.tokenizer.pad_token is not a short string.")
    return TokenizerInfo(file, pad_token, _int(d.get("pad_id"), "pad_id"), side, tuple(names),
                         _int(d.get("max_length"), "max_length", 1), _int(d.get("bos_id"), "bos_id"),
                         _int(d.get("eos_id"), "eos_id"), cut)


def parse_image(d: Any) -> ImageInfo:
    """``preprocess.image`` from an unverified manifest.

    Raises:
        BundleError: a field of the wrong type or range.
    """
    if not isinstance(d, dict):
        raise BundleError("manifest.json preprocess.image is not an object; the bundle is corrupt or was edited.")
    channels = _int(d.get("channels"), "image channels", 1, 65, none=False)
    assert channels is not None
    std = _floats(d.get("std"), "image std", channels)
    if any(s == 0 for s in std):
        raise BundleError("manifest.json preprocess.image.std holds 0; normalising would divide by zero.")
    factor = d.get("rescale_factor", 1 / 255)
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor):
        raise BundleError("manifest.json preprocess.image.rescale_factor is not a finite number.")
    flags = {k: d.get(k, True) for k in ("do_rescale", "do_normalize")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise BundleError("manifest.json preprocess.image: do_rescale and do_normalize must be true or false.")
    height, width = (_int(d.get(k), f"image {k}", 1, 1 << 16, none=False) for k in ("height", "width"))
    assert height is not None and width is not None
    return ImageInfo(_floats(d.get("mean"), "image mean", channels), std, height, width, channels,
                     flags["do_rescale"], float(factor), flags["do_normalize"])


def guarded(call: Callable[[], Any], error: type[Exception], what: str) -> Any:
    """``call()``, with anything the Rust ``tokenizers`` library raises as ``error``: its panics
    (``pyo3_runtime.PanicException``, e.g. a crafted regex over its backtracking limit) derive from
    BaseException and would escape ``except Exception``."""
    try:
        return call()
    except UNCAUGHT:
        raise
    except BaseException as e:
        raise error(f"{what}: the tokenizers library failed ({type(e).__name__}: {str(e).strip()[:200]})") from e


def replace_growth(node: Any, depth: int = 0) -> float:
    """How many times, at worst, the normalizer ``node`` (tokenizer.json's ``normalizer``) lengthens a
    text: the product over its (nested, sequenced) Replace rules of len(content) / len(pattern) where the
    content is longer (a regex pattern counts as one character: it may match one)."""
    if depth > MAX_DEPTH:
        raise BundleError(f"{TOKENIZER_FILE}: its normalizers nest over {MAX_DEPTH} deep; the bundle is corrupt or "
                          "was crafted.")
    if not isinstance(node, dict):
        return 1.0
    if node.get("type") == "Sequence" and isinstance(node.get("normalizers"), list):
        growth = 1.0
        for child in node["normalizers"]:
            growth *= replace_growth(child, depth + 1)
        return growth
    if node.get("type") == "Replace":
        pattern, content = node.get("pattern"), node.get("content")
        text = pattern.get("String") if isinstance(pattern, dict) else None
        width = len(text) if isinstance(text, str) else 1
        return max(1.0, len(content) / max(1, width)) if isinstance(content, str) else 1.0
    return 1.0


def check_tokenizer_json(text: str, file: str = TOKENIZER_FILE) -> None:
    """Refuse a tokenizer.json whose normalizers could multiply a text's length (Replace rules that each
    lengthen what they match, in sequence: a few hundred bytes of JSON can turn "a" into a million
    characters).

    Raises:
        BundleError: not JSON, or a worst-case growth over :data:`MAX_GROWTH`.
    """
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"{file} in the bundle is not JSON: {str(e)[:200]}") from e
    growth = replace_growth(d.get("normalizer")) if isinstance(d, dict) else 1.0
    if growth > MAX_GROWTH:
        raise BundleError(f"{file}: its Replace normalizers can lengthen a text {growth:,.0f} times (at most "
                          f"{MAX_GROWTH} is accepted); the bundle is corrupt or was crafted to exhaust memory.")


class TextEncoder:
    """Text -> feeds, with the bundle's own tokenizer (``tokenizers``, no torch, no transformers).

    ``encode(texts)`` equals ``AutoTokenizer(...)(texts, padding=True, truncation=True)`` of the folder
    the bundle was exported from: special tokens added, a list padded to its longest text on the
    tokenizer's padding side with the pad token, the attention mask to match, and every text cut at
    ``max_length`` (the model's own limit: its position embeddings, or a sentence-transformers'
    ``max_seq_length``) on the tokenizer's truncation side.

    Thread-safe: ``truncation=False`` uses a second Tokenizer (built on first use) instead of switching
    the shared one's truncation off and on."""

    def __init__(self, data: bytes, info: TokenizerInfo, dtypes: dict[str, str]):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise SpecError(MISSING_TOKENIZERS) from e
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BundleError(f"{info.file} in the bundle is not UTF-8 text: {e}") from e
        check_tokenizer_json(text, info.file)
        self._build: Callable[[], Any] = lambda: guarded(
            lambda: Tokenizer.from_str(text), BundleError,
            f"{info.file} in the bundle is not a tokenizer the tokenizers library reads")
        self.tokenizer = self._build()
        self.info = info
        self.dtypes = dtypes
        self.tokenizer.no_padding()
        if info.max_length is not None:
            self.tokenizer.enable_truncation(info.max_length, direction=info.truncation_side)
        else:
            self.tokenizer.no_truncation()
        self._untruncated: Any = self.tokenizer if info.max_length is None else None
        self._lock = threading.Lock()

    def _whole(self) -> Any:
        """The Tokenizer without truncation (a second one: the shared one is never switched)."""
        with self._lock:
            if self._untruncated is None:
                tok = self._build()
                tok.no_padding()
                tok.no_truncation()
                self._untruncated = tok
            return self._untruncated

    def encodings(self, texts: str | Sequence[Any], *, truncation: bool = True) -> list[Any]:
        """The ``tokenizers`` Encodings of ``texts``, unpadded.

        Raises:
            SpecError: not a string or a non-empty list of strings, too many texts or characters.
            InferenceError: the tokenizers library fails on them.
        """
        batch = [texts] if isinstance(texts, str) else texts

        def pair(t: Any) -> bool:  # (question, context): one sequence of two segments, as tokenizer(q, c) makes
            return isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t)

        if not isinstance(batch, (list, tuple)) or not batch or not all(isinstance(t, str) or pair(t) for t in batch):
            raise SpecError(f"encode takes a string, or a non-empty list of strings or of (text, text_pair) pairs; got "
                            f"{type(texts).__name__}.")
        if len(batch) > MAX_TEXTS:
            raise SpecError(f"encode takes at most {MAX_TEXTS} texts at a time; split the {len(batch)} into batches.")
        batch = [t if isinstance(t, str) else tuple(t) for t in batch]
        chars = sum(len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in batch)
        if chars > MAX_CHARS:
            raise SpecError(f"encode takes at most {MAX_CHARS:,} characters at a time; got {chars:,}: split the texts "
                            "into smaller batches.")
        tok = self.tokenizer if truncation else self._whole()
        encodings: list[Any] = guarded(lambda: tok.encode_batch(list(batch)), InferenceError,
                                        f"encoding {len(batch)} text(s) with {self.info.file}")
        return encodings

    def encode(self, texts: str | Sequence[Any], *, truncation: bool = True) -> dict[str, np.ndarray]:
        """Feeds for ``texts`` (one string, or a list: a batch padded to its longest text; an item may be
        a (text, text_pair) pair, a question and its context, as ``tokenizer(q, c)`` encodes them).

        Raises:
            SpecError: not a string or list of strings, an empty list, too many characters, or texts of
                different lengths and no pad token to pad them with.
            InferenceError: the tokenizers library fails on them.
        """
        encodings = self.encodings(texts, truncation=truncation)
        longest = max(len(e.ids) for e in encodings)
        if self.info.pad_id is None and any(len(e.ids) != longest for e in encodings):
            raise SpecError("the texts tokenize to different lengths and this model's tokenizer has no pad token "
                            "(its save_pretrained folder named none); encode them one at a time.")
        columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        feeds = {}
        for name in self.info.model_input_names:
            pad = self.info.pad_id if name == "input_ids" else 0
            out = np.full((len(encodings), longest), pad or 0, dtype=self.dtypes.get(name, "int64"))
            for row, e in enumerate(encodings):
                values = getattr(e, columns[name])
                if self.info.padding_side == "right":
                    out[row, :len(values)] = values
                else:
                    out[row, longest - len(values):] = values
            feeds[name] = out
        return feeds

    def decode(self, ids: Any, *, skip_special_tokens: bool = True) -> str | list[str]:
        """Text from token ids: one sequence (a list or 1-D array) gives a string, a batch (2-D) a list.

        Raises:
            SpecError: not integer ids, or an id outside [0, 2**32).
            InferenceError: the tokenizers library fails on them.
        """
        try:
            a = np.asarray(ids)
        except (ValueError, TypeError, OverflowError) as e:
            raise SpecError(f"decode takes token ids as integers, one sequence or a batch: {str(e)[:120]}") from e
        if a.ndim not in (1, 2) or a.dtype.kind not in "iu":
            raise SpecError(f"decode takes token ids as integers, one sequence or a batch; got {a.dtype}{list(a.shape)}.")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= 1 << 32):
            bad = int(a.min()) if int(a.min()) < 0 else int(a.max())
            raise SpecError(f"decode: token id {bad} is not a token id (ids run from 0 to {(1 << 32) - 1}).")
        tok = self.tokenizer
        if a.ndim == 1:
            return str(guarded(lambda: tok.decode([int(i) for i in a], skip_special_tokens=skip_special_tokens),
                                InferenceError, "decoding token ids"))
        return list(guarded(lambda: tok.decode_batch([[int(i) for i in row] for row in a],
                                                      skip_special_tokens=skip_special_tokens),
                             InferenceError, "decoding token ids"))


def encode_images(images: Any, info: ImageInfo, dtype: str = "float32") -> np.ndarray:
    """HWC (or NHWC) images, uint8 in [0, 255] or floats already rescaled, to the model's normalised
    NCHW ``pixel_values``: ``(x * rescale_factor - mean) / std``, as the image processor does after
    its resize. Images must already have the model's size (a resize is not done here: libraries
    differ in their interpolation, so an exact match is not promised).

    Raises:
        SpecError: not an array of (N)HWC images of the model's size and channels.
    """
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.dtype.kind not in "uif" or a.shape[3] != info.channels:
        raise SpecError(f"encode takes images as HWC or NHWC arrays with {info.channels} channels; got "
                        f"{a.dtype}{list(a.shape)}.")
    if a.shape[1:3] != (info.height, info.width):
        raise SpecError(f"the images are {a.shape[1]}x{a.shape[2]}, the model takes {info.height}x{info.width}; "
                        "resize them first (edgeship does not resize: interpolations differ between libraries).")
    x: np.ndarray = a.astype(np.float32)
    if info.do_rescale and a.dtype.kind in "ui":
        x = x * np.float32(info.rescale_factor)
    if info.do_normalize:
        x = (x - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(dtype, copy=False)


def parse_task(d: Any) -> dict[str, Any]:
    """The manifest's ``task`` from an unverified manifest: {"name", "model_type", "architectures",
    "labels" (list of strings or null), "pooling" (optional)}.

    Raises:
        BundleError: a field of the wrong type.
    """
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or len(d["name"]) > 100:
        raise BundleError("manifest.json task is not an object with a name; the bundle is corrupt or was edited.")
    if not isinstance(d.get("model_type", ""), str) or not isinstance(d.get("architectures", []), list) \
            or not all(isinstance(a, str) for a in d.get("architectures", [])):
        raise BundleError("manifest.json task: model_type must be a string and architectures a list of strings.")
    labels = d.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) > MAX_ID
                               or not all(isinstance(x, str) for x in labels)):
        raise BundleError("manifest.json task.labels is not a list of strings; the bundle is corrupt or was edited.")
    return d


def check_preprocess(manifest: dict[str, Any], input_names: Sequence[str]) -> None:
    """Refuse a crafted ``task`` or ``preprocess`` (called while the manifest is parsed).

    Raises:
        BundleError: naming the field.
    """
    if "task" in manifest:
        parse_task(manifest["task"])
    pre = manifest.get("preprocess")
    if pre is None:
        return
    if not isinstance(pre, dict) or not set(pre) <= {"tokenizer", "image"}:
        raise BundleError("manifest.json preprocess must be an object with 'tokenizer' and/or 'image'.")
    if "tokenizer" in pre:
        parse_tokenizer(pre["tokenizer"], manifest["files"], input_names)
    if "image" in pre:
        parse_image(pre["image"])


class Preprocessor:
    """A bundle's task metadata and pre-processing, as :class:`edgeship.Model` exposes them.

    The tokenizer's bytes are read (and their sha256 checked) when the Model is loaded; the
    ``tokenizers`` library is imported on the first ``encode``/``decode``/``tokenizer``."""

    def __init__(self, manifest: dict[str, Any], inputs: Sequence[Any], read: Any):
        self.task_record = manifest.get("task") if isinstance(manifest.get("task"), dict) else None
        self.preprocess: dict[str, Any] = manifest.get("preprocess") or {}
        names = [t.name for t in inputs]
        self.dtypes = {t.name: t.dtype for t in inputs}
        self.text = parse_tokenizer(self.preprocess["tokenizer"], manifest["files"], names) \
            if "tokenizer" in self.preprocess else None
        self.image = parse_image(self.preprocess["image"]) if "image" in self.preprocess else None
        self._data = read(self.text.file) if self.text is not None else None
        self._encoder: TextEncoder | None = None
        self._pixel = next((t for t in inputs if t.name == "pixel_values"), None) if self.image is not None else None

    @property
    def task(self) -> str | None:
        return self.task_record["name"] if self.task_record else None

    @property
    def labels(self) -> list[str] | None:
        return self.task_record.get("labels") if self.task_record else None

    def encoder(self) -> TextEncoder:
        if self.text is None or self._data is None:
            raise SpecError("this bundle carries no tokenizer (it was not exported from a Hugging Face folder with a "
                            "tokenizer.json); build the feeds yourself.")
        if self._encoder is None:
            self._encoder = TextEncoder(self._data, self.text, self.dtypes)
        return self._encoder

    def encode(self, items: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        if self.text is None and self.image is not None and self._pixel is not None:
            return {"pixel_values": encode_images(items, self.image, self._pixel.dtype)}
        return self.encoder().encode(items, **kwargs)
