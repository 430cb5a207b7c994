"""Issue 20 item 16: ``profile --json r.npz`` overwrote its own JSON with the latencies and wrote
the sibling .npz through a symbolic link; ``EDGESHIP_MAX_ARRAY_MB=1e308`` overflowed while junk
values were silently ignored; a deeply nested pyproject.toml in the working directory gave a
RecursionError (exit 3)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import edgeship
from edgeship.bundle.limits import array_budget
from edgeship.errors import SpecError

PROFILE = ["-n", "2", "--warmup", "0"]


def test_profile_json_named_npz_is_refused_before_profiling(bundle_copy, tmp_path, cli):
    out = tmp_path / "r.npz"
    code, msg = cli("profile", bundle_copy, *PROFILE, "--json", out)
    assert code == 2 and "r.npz" in msg and ".json" in msg and "Latency" not in msg, msg
    assert not out.exists()


def test_profile_json_whose_latency_file_is_the_json_through_a_link(bundle_copy, tmp_path, cli):
    (tmp_path / "r.npz").symlink_to(tmp_path / "r.json")
    code, msg = cli("profile", bundle_copy, *PROFILE, "--json", tmp_path / "r.json")
    assert code == 2 and "Traceback" not in msg, msg
    assert not (tmp_path / "r.json").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_profile_json_never_writes_the_latencies_through_a_link(bundle_copy, tmp_path, cli):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / "r.npz").symlink_to(precious)
    code, msg = cli("profile", bundle_copy, *PROFILE, "--json", tmp_path / "r.json")
    assert code == 2 and "link" in msg and "Traceback" not in msg, msg
    assert precious.read_text() == "keep me"


def test_profile_json_writes_json_and_latencies_beside_it(bundle_copy, tmp_path, cli):
    code, msg = cli("profile", bundle_copy, *PROFILE, "--json", tmp_path / "r.json")
    assert code == 0, msg
    assert json.loads((tmp_path / "r.json").read_text())["latencies"] == "r.npz"
    assert np.load(tmp_path / "r.npz").files


def test_write_json_refuses_a_link_planted_after_the_check(bundle_copy, tmp_path):
    """The latencies file is opened without following links (a link made between check and write)."""
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import profile, write_json

    report = profile(bundle_copy, ProfileConfig(iterations=2, warmup=0))
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / "r.npz").symlink_to(precious)
    with pytest.raises(edgeship.EdgeshipError, match="link"):
        write_json(report, tmp_path / "r.json")
    assert precious.read_text() == "keep me"


# ----------------------------------------------------------------------------- EDGESHIP_MAX_ARRAY_MB
@pytest.mark.parametrize("value", ["1e308", "inf", "nan", "-5", "0", "abc", "12MB", "1e400", "2e9"])
def test_max_array_mb_that_is_not_a_sane_number_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv("EDGESHIP_MAX_ARRAY_MB", value)
    with pytest.raises(SpecError, match=r"EDGESHIP_MAX_ARRAY_MB=.*: use a number of MiB"):
        array_budget()


@pytest.mark.parametrize(("value", "expected"), [("", 256 << 20), ("1", 1 << 20), ("0.5", 1 << 19), (" 1024 ", 1 << 30)])
def test_max_array_mb_values(monkeypatch, value, expected):
    monkeypatch.setenv("EDGESHIP_MAX_ARRAY_MB", value)
    assert array_budget() == expected


def test_max_array_mb_overflow_is_exit_2_in_the_cli(bundle_copy, cli, monkeypatch):
    monkeypatch.setenv("EDGESHIP_MAX_ARRAY_MB", "1e308")
    code, msg = cli("check", bundle_copy)
    assert code == 2 and "EDGESHIP_MAX_ARRAY_MB" in msg and "Traceback" not in msg, msg


# ----------------------------------------------------------------------------- pyproject.toml
@pytest.mark.parametrize("text", ["a = " + "[" * 100_000 + "]" * 100_000,
                                  "[tool.edgeship.tolerances]\nx = " + "{a=" * 50_000 + "1" + "}" * 50_000])
def test_deeply_nested_pyproject_is_a_usage_error(bundle_copy, tmp_path, cli, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(text)
    code, msg = cli("check", bundle_copy)
    assert code == 2 and "pyproject.toml" in msg and "Traceback" not in msg, msg


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_pyproject_is_a_usage_error(bundle_copy, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.edgeship]\n")
    (tmp_path / "pyproject.toml").chmod(0)
    code, msg = cli("check", bundle_copy)
    assert code == 2 and "pyproject.toml" in msg and "Traceback" not in msg, msg


# ----------------------------------------------------------------------------- a FIFO beside --json
@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs")
def test_profile_json_refuses_a_fifo_at_the_latencies_name_without_blocking(bundle_copy, tmp_path):
    """A FIFO named like the latencies file blocked the write forever (opened without O_NONBLOCK)."""
    from hostile_helpers import cli_peak

    os.mkfifo(tmp_path / "r.npz")
    code, msg, _ = cli_peak("profile", bundle_copy, *PROFILE, "--cold-start", "off", "--json", tmp_path / "r.json",
                            timeout=90)
    assert code == 2 and "r.npz" in msg and "not a regular file" in msg and "Traceback" not in msg, msg


def test_write_json_refuses_a_folder_at_the_latencies_name(bundle_copy, tmp_path):
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import profile, write_json

    report = profile(bundle_copy, ProfileConfig(iterations=2, warmup=0, cold_start="off"))
    (tmp_path / "r.npz").mkdir()
    with pytest.raises(SpecError, match="not a regular file"):
        write_json(report, tmp_path / "r.json")
    write_json(report, tmp_path / "s.json")
    (tmp_path / "s.npz").write_bytes(b"x" * 10_000)  # an older, longer file is replaced, not overwritten in part
    write_json(report, tmp_path / "s.json")
    assert np.load(tmp_path / "s.npz").files


# ----------------------------------------------------------------------------- --arch-kwargs
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"])
def test_deeply_nested_arch_kwargs_is_a_usage_error(text):
    from edgeship.cli.options import json_kwargs

    with pytest.raises(SpecError, match="--arch-kwargs .*nest"):
        json_kwargs(text)


def test_deeply_nested_arch_kwargs_is_exit_2(files, tmp_path, cli):
    from conftest import arch

    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--arch-kwargs",
                    "[" * 100_000 + "]" * 100_000, "--input", "x:1x10", "-o", tmp_path / "m.edgeship")
    assert code == 2 and "--arch-kwargs" in msg and "Traceback" not in msg, msg
