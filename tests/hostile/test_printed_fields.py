"""Issue 20 item 16: what a bundle says is printed as text, never interpreted: rich markup (``[/]``)
and terminal escape sequences in a bundle, variant or candidate name, a candidate id or a
precision; and informational manifest fields of the wrong type (``tools``, ``created_at``,
``size``, ``ops``, ``source``) are shown as absent, not a crash (exit 3)."""

from __future__ import annotations

import json

import pytest
from conftest import fake_p50s
from hostile_helpers import edit_manifest

from edgeship.bundle import MANIFEST

ESC = "\x1b[31mred\x1b]0;owned\x07"
NASTY = f"a[/]b[bold]{ESC}\u202e"


def _rename_variant(bundle, old: str, new: str) -> None:
    """Rename variant ``old`` (its key, the defaults and candidates naming it), as an attacker could."""
    m = json.loads((bundle / MANIFEST).read_text())
    m["variants"] = {(new if k == old else k): v for k, v in m["variants"].items()}
    m["defaults"] = {t: (new if v == old else v) for t, v in m["defaults"].items()}
    for cands in m.get("candidates", {}).values():
        for c in cands:
            if c["variant"] == old:
                c["variant"] = new
                c["id"] = c["id"].replace(old, new, 1)
    (bundle / MANIFEST).write_text(json.dumps(m))


def _nasty(bundle, where: str) -> None:
    if where == "name":
        edit_manifest(bundle, name=NASTY)
    elif where == "variant":
        _rename_variant(bundle, "fp32", "fp32" + NASTY)
    elif where == "precision":
        m = json.loads((bundle / MANIFEST).read_text())
        for c in m["candidates"]["cpu"]:
            c["precision"] = c["precision"] + NASTY
        m["variants"]["int8_dynamic"]["precision"] = "int8" + NASTY
        (bundle / MANIFEST).write_text(json.dumps(m))
    else:  # candidate id
        m = json.loads((bundle / MANIFEST).read_text())
        for i, c in enumerate(m["candidates"]["cpu"]):
            c["id"] = f"{c['id']}{NASTY}{i}"
        (bundle / MANIFEST).write_text(json.dumps(m))


def _clean(code: int, msg: str) -> None:
    assert code in (0, 1, 2), msg
    assert "Traceback" not in msg and "\x1b" not in msg and "\x07" not in msg and "\u202e" not in msg, ascii(msg)


@pytest.mark.parametrize("where", ["name", "variant", "precision", "candidate id"])
@pytest.mark.parametrize("command", ["tune", "profile", "profile --candidates", "inspect", "check", "run"])
def test_markup_and_escapes_from_a_bundle_are_printed_as_text(bundle_copy, tmp_path, cli, monkeypatch, where, command):
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0))
    monkeypatch.setenv("COLUMNS", "400")
    _nasty(bundle_copy, where)
    args = {"tune": ["tune", bundle_copy, "-o", tmp_path / "t.edgeship"],
            "profile": ["profile", bundle_copy, "-n", "2", "--warmup", "0"],
            "profile --candidates": ["profile", bundle_copy, "--candidates", "-n", "2", "--warmup", "0",
                                     "--runtime", "onnxruntime"],
            "inspect": ["inspect", bundle_copy], "check": ["check", bundle_copy, "--table"]}.get(command)
    if args is None:
        import numpy as np

        x = tmp_path / "x.npy"
        np.save(x, np.ones((1, 10), np.float32))
        args = ["run", bundle_copy, "--input", x]
    code, msg = cli(*args)
    _clean(code, msg)
    if where == "name" and command == "profile":
        assert "a[/]b[bold]" in msg and "\\x1b" in msg, msg  # shown, escaped


BAD_VALUES = [5, 1.5, True, "s[/]", [1, "a"], {"a": [1]}, {"a": {"b": 1}}, None]


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
@pytest.mark.parametrize("field", ["tools", "created_at", "source", "size", "ops"])
@pytest.mark.parametrize("command", ["inspect", "profile"])
def test_mistyped_manifest_fields_do_not_crash(bundle_copy, cli, field, value, command):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    if field in ("size", "ops"):
        for v in m["variants"].values():
            v[field] = value
    else:
        m[field] = value
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    args = ["inspect", bundle_copy] if command == "inspect" else ["profile", bundle_copy, "-n", "2", "--warmup", "0"]
    code, msg = cli(*args)
    _clean(code, msg)
    assert code == 0, msg


def test_logged_messages_are_printed_as_text_too(bundle_copy, cli, monkeypatch, caplog):
    """Log lines (what load passed over and why, -v) name candidates from the bundle as well."""
    import logging

    _nasty(bundle_copy, "candidate id")
    m = json.loads((bundle_copy / MANIFEST).read_text())
    first = m["candidates"]["cpu"][0]
    first["requires"] = {"cpu_any": ["no_such_flag" + NASTY]}  # passed over here, with a logged reason
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    import numpy as np

    x = bundle_copy.parent / "x.npy"
    np.save(x, np.ones((1, 10), np.float32))
    code, msg = cli("run", bundle_copy, "--input", x, "-v")
    _clean(code, msg)
    logging.getLogger().handlers.clear()
