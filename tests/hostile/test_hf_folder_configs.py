"""A Hugging Face folder whose config.json, weights or image processor were crafted or mistyped: every
one is exit 2 naming the file and what to fix, nothing is written, and no bundle that would not load is
shipped. Found by a sweep of crafted folders, where these were exit 3 (an unexpected error) or exported
a bundle that `edgeship.load` then refused (a std of 0 in preprocessor_config.json)."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from tests import hf_fixtures as hf

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("crafted-hf")
    return {"text": hf.save_bert(root / "text", "sequence"), "vision": hf.save_vit(root / "vision")}


def _json(name, **changes):
    def edit(d: Path) -> None:
        data = json.loads((d / name).read_text())
        data.update(changes)
        (d / name).write_text(json.dumps(data))
    return edit


def _raw(name, text):
    return lambda d: (d / name).write_text(text)


def _header(change):
    """Rewrite model.safetensors' JSON header (the data after it kept)."""
    def edit(d: Path) -> None:
        data = (d / "model.safetensors").read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        change(header)
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return edit


def _classifier(header):
    return header[next(k for k in header if k.endswith("classifier.weight"))]


def _outside_index(d: Path) -> None:
    (d / "model.safetensors").rename(d / "other.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"bert.pooler.dense.weight": "../../etc/passwd"}}))


CASES = {
    "id2label a list": ("text", _json("config.json", id2label=["NEGATIVE", "POSITIVE"]), "transformers cannot build the model"),
    "id2label keys not ids": ("text", _json("config.json", id2label={"a": "x", "b": "y"}), "transformers cannot build the model"),
    "more labels than the head has": ("text", _json("config.json", id2label={"0": "a", "1": "b", "2": "c"},
                                                    label2id={"a": 0, "b": 1, "c": 2}),
                                      "the weights' shapes do not match the sizes config.json gives"),
    "a size that is text": ("text", _json("config.json", hidden_size="32"), "hidden_size is '32'; it must be a positive whole"),
    "a size of 0": ("text", _json("config.json", num_attention_heads=0), "num_attention_heads is 0"),
    "a negative size": ("text", _json("config.json", max_position_embeddings=-1), "max_position_embeddings is -1"),
    "a size that is NaN": ("text", _raw("config.json", '{"model_type": "bert", "architectures": '
                                                       '["BertForSequenceClassification"], "hidden_size": NaN}'),
                           "hidden_size is nan"),
    "heads that do not divide the width": ("text", _json("config.json", num_attention_heads=5),
                                           "transformers cannot build the model .*not a multiple"),
    "a vocabulary of 10**12": ("text", _json("config.json", vocab_size=10**12), "describe at least .* GiB of fp32 weights"),
    "weights cut short": ("text", lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
                          "SafetensorError"),
    "a weights header of 2**62 bytes": ("text", lambda d: (d / "model.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}"),
                                        "header too large"),
    "a tensor shape the data does not hold": ("text", _header(lambda h: _classifier(h).update(shape=[3, 32])), "SafetensorError"),
    "an index naming a file outside": ("text", _outside_index, "transformers cannot build the model"),
    "image mean that is text": ("vision", _json("preprocessor_config.json", image_mean=["a", "b", "c"]),
                                "is not an image processor edgeship can carry: could not convert string to float"),
    "image std of 0": ("vision", _json("preprocessor_config.json", image_std=[0, 0, 0]), "std holds 0"),
    "image mean for 2 of 3 channels": ("vision", _json("preprocessor_config.json", image_mean=[0.5, 0.5]),
                                       "image mean is not a list of 3 finite numbers"),
    "an image of 10**9 pixels a side": ("vision", _json("preprocessor_config.json", size={"height": 10**9, "width": 10**9}),
                                        "image height is '1000000000', not an integer from 1 to 65535"),
    "rescale_factor NaN": ("vision", _raw("preprocessor_config.json", '{"image_mean": [0.5, 0.5, 0.5], "image_std": '
                                                                      '[0.5, 0.5, 0.5], "rescale_factor": NaN}'),
                           "rescale_factor is not a finite number"),
    "10**6 channels": ("vision", _json("config.json", num_channels=10**6), "describe at least .* GiB of fp32 weights"),
    "an image of 10**6 pixels a side": ("vision", _json("config.json", image_size=10**6), "describe at least .* GiB of fp32 weights"),
    "an image_size of 0": ("vision", _json("config.json", image_size=0), "image_size is 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_folder_is_exit_2_naming_what_to_fix(base, tmp_path, cli, case):
    kind, edit, match = CASES[case]
    d = shutil.copytree(base[kind], tmp_path / "m")
    edit(d)
    code, out = cli("export", d, "-o", tmp_path / "b.edgeship", "--quantize", "fp32")
    assert code == 2, out
    assert re.search(match, out), out
    assert "this is a bug" not in out and "corrupt or was edited" not in out
    assert not (tmp_path / "b.edgeship").exists()
