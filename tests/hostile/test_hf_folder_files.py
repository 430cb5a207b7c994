"""A Hugging Face folder whose files are not what they claim: a FIFO, a folder, a link to nothing, a
JSON file of the wrong kind or size. Every one is a ModelLoadError naming the file (exit 2, nothing
written); none blocks, and none is skipped as if absent (a FIFO tokenizer.json once gave a bundle
without its tokenizer, silently). A link to a real file, as the hub's cache holds them, is read."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from edgeship.errors import ModelLoadError
from edgeship.hf.folder import MAX_JSON_BYTES, read_folder
from edgeship.hf.preprocess import MAX_TOKENIZER_BYTES

FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
         "model.safetensors", "modules.json")


def _folder(d: Path) -> Path:
    """A folder read_folder accepts (it reads no weights), with every optional file present."""
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (d / "model.safetensors").write_bytes(b"")
    (d / "tokenizer.json").write_text("{}")
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    (d / "preprocessor_config.json").write_text("{}")
    (d / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"}]))
    return d


def _read(d: Path, **kw):
    """read_folder in a thread, so a reader that blocks on a FIFO fails the test instead of hanging it."""
    box: dict = {}

    def run():
        try:
            box["value"] = read_folder(d, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "read_folder blocked"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_the_good_folder_reads(tmp_path):
    f = _read(_folder(tmp_path / "m"))
    assert f.tokenizer == tmp_path / "m" / "tokenizer.json" and f.tokenizer_config["model_max_length"] == 32


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling link"])
def test_a_file_that_is_not_a_regular_file_is_refused_by_name(tmp_path, name, kind):
    d = _folder(tmp_path / "m")
    (d / name).unlink()
    if kind == "fifo":
        os.mkfifo(d / name)
    elif kind == "folder":
        (d / name).mkdir()
    else:
        (d / name).symlink_to(tmp_path / "gone")
    want = "is a link to nothing" if kind == "dangling link" else "is not a regular file"
    with pytest.raises(ModelLoadError, match=want) as e:
        _read(d)
    assert str(d / name) in str(e.value) and "save_pretrained" in str(e.value)


def test_links_to_real_files_as_the_hub_cache_holds_them_are_read(tmp_path):
    d = _folder(tmp_path / "m")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in FILES:
        (d / name).rename(blobs / name)
        (d / name).symlink_to(blobs / name)
    f = _read(d)
    assert f.tokenizer == d / "tokenizer.json" and f.config["model_type"] == "bert"


@pytest.mark.parametrize("name,content,match", [
    ("config.json", "[1, 2]", "is not a JSON object"),
    ("tokenizer_config.json", '"text"', "is not a JSON object"),
    ("modules.json", "{}", "is not a JSON list"),
    ("preprocessor_config.json", "{", "cannot be read as JSON"),
    ("special_tokens_map.json", b"\xff\xfe{}", "cannot be read as JSON"),
    ("config.json", "[" * 100_000 + "]" * 100_000, "cannot be read as JSON"),
])
def test_json_of_the_wrong_kind_is_refused(tmp_path, name, content, match):
    d = _folder(tmp_path / "m")
    if isinstance(content, bytes):
        (d / name).write_bytes(content)
    else:
        (d / name).write_text(content)
    with pytest.raises(ModelLoadError, match=match):
        _read(d)


@pytest.mark.parametrize("name,limit,match", [
    ("tokenizer_config.json", MAX_JSON_BYTES, "is over 64 MiB; refused unread. No configuration file"),
    ("modules.json", MAX_JSON_BYTES, "is over 64 MiB; refused unread. No configuration file"),
    ("tokenizer.json", MAX_TOKENIZER_BYTES, "over the 64 MiB a bundle's tokenizer may take"),
])
def test_an_oversized_file_is_refused_before_it_is_read_whole(tmp_path, name, limit, match):
    d = _folder(tmp_path / "m")
    with open(d / name, "wb") as f:  # sparse: no disk used
        f.truncate(limit + 1)
    with pytest.raises(ModelLoadError, match=match):
        _read(d)


def test_the_cli_says_which_file_and_writes_nothing(tmp_path, cli):
    d = _folder(tmp_path / "m")
    (d / "modules.json").unlink()
    (d / "tokenizer.json").unlink()
    os.mkfifo(d / "tokenizer.json")
    code, out = cli("export", d, "-o", tmp_path / "x.edgeship")
    assert code == 2 and "the tokenizer" in out and "not a regular file" in " ".join(out.split()), out
    assert not (tmp_path / "x.edgeship").exists()
