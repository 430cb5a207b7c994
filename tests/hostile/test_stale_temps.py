"""Issue 20 item 13: a temporary planted beside the output (a shared sticky folder such as /tmp)
never becomes the output, and a failed write says what is at the output path; item 16: replacing
a bundle keeps its permissions (tune as root on a read-only bundle)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import arch
from hostile_helpers import bundle_files, bundle_manifest, snapshot, temps_beside

import edgeship.bundle.write as B
from edgeship.bundle import open_bundle, write_bundle
from edgeship.errors import BundleError

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 54321  # a user that is not us




def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant(mlp_bundle, folder, name, owner=None):
    """A complete bundle named ``name`` that an attacker left in ``folder``, re-signed as ``planted``."""
    planted = folder / name
    tmp = folder / "staging"
    write_bundle(tmp, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "planted"))
    os.rename(tmp, planted)
    if owner is not None:
        for p in [planted, *planted.rglob("*")]:
            os.lchown(p, owner, owner)
    return planted


def _fail_copy(monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfile", full)


@pytest.fixture
def shared(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)  # like /tmp
    return d


def _plants(mlp_bundle, shared):
    """The issue's name (no random part) and, where we can chown, one named like ours but owned by another user."""
    dead = _dead_pid()
    out = shared / "out.edgeship"
    plants = [_plant(mlp_bundle, shared, f".out.edgeship.tmp-{dead}-old")]
    if ROOT:
        plants.append(_plant(mlp_bundle, shared, f".out.edgeship.tmp-{dead}-k3j2h1g0-old", owner=OTHER_UID))
    return out, plants


def test_planted_stale_temporary_never_becomes_the_output_when_the_write_fails(mlp_bundle, shared, monkeypatch):
    out, plants = _plants(mlp_bundle, shared)
    _fail_copy(monkeypatch)
    with pytest.raises(BundleError, match="nothing was written to") as e:
        write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "mine"))
    assert "previous contents are unchanged" not in str(e.value)
    assert not os.path.lexists(out), "a planted temporary was renamed into place"


def test_planted_stale_temporary_is_not_adopted_when_the_write_succeeds(mlp_bundle, shared):
    out, plants = _plants(mlp_bundle, shared)
    write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "mine"))
    assert open_bundle(out).manifest["name"] == "mine"
    if ROOT:  # another user's temporary is neither adopted nor deleted
        assert plants[1].exists() and open_bundle(plants[1]).manifest["name"] == "planted"


@pytest.mark.skipif(not ROOT, reason="making a file owned by another user needs root")
def test_another_users_temporary_named_like_ours_is_left_alone(mlp_bundle, shared):
    dead = _dead_pid()
    out = shared / "out.edgeship"
    theirs = shared / f".out.edgeship.tmp-{dead}-a1b2c3d4"
    theirs.mkdir()
    (theirs / "x").write_text("theirs")
    os.lchown(theirs, OTHER_UID, OTHER_UID)
    write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "mine"))
    assert (theirs / "x").read_text() == "theirs"


def test_our_own_killed_writers_old_bundle_is_still_put_back(mlp_bundle, tmp_path):
    """The recovery the check must not break: our own temporary, our naming, a dead pid."""
    out = tmp_path / "b.edgeship"
    aside = tmp_path / f".b.edgeship.tmp-{_dead_pid()}-abc12345-old"
    write_bundle(tmp_path / "staging", bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "old"))
    os.rename(tmp_path / "staging", aside)
    B._clean_stale_temps(out)
    assert open_bundle(out).manifest["name"] == "old" and not temps_beside(out)


@pytest.mark.parametrize("name", ["model[v2].edgeship", "a**b.edgeship", "what?.edgeship"])
def test_a_bundle_name_with_glob_syntax_writes_and_cleans_its_own_temporaries(mlp_bundle, tmp_path, name):
    """The temporaries are found by their prefix, not by a glob of the name: "**" made the glob raise
    (exit 3) and "[v2]" matched none of them."""
    out = tmp_path / name
    aside = tmp_path / f".{name}.tmp-{_dead_pid()}-abc12345-old"
    write_bundle(tmp_path / "staging", bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "old"))
    os.rename(tmp_path / "staging", aside)
    B._clean_stale_temps(out)
    assert open_bundle(out).manifest["name"] == "old" and not temps_beside(out)
    write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "new"))
    assert open_bundle(out).manifest["name"] == "new" and not temps_beside(out)


def test_the_fallback_swap_refuses_a_planted_old_name(mlp_bundle, tmp_path, monkeypatch):
    """Without renameat2 the old bundle is moved aside under a name the writer creates itself
    (exclusively): one planted there first makes the write fail, the old bundle stays."""
    out = tmp_path / "b.edgeship"
    write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "old"))
    before = snapshot(out)
    monkeypatch.setattr(B, "_exchange", lambda a, b: False)
    real_mkdtemp = B.tempfile.mkdtemp

    def mkdtemp(*a, **k):
        tmp = real_mkdtemp(*a, **k)
        planted = tmp + "-old"
        os.mkdir(planted)  # an empty folder: rename(2) would silently replace it
        return tmp

    monkeypatch.setattr(B.tempfile, "mkdtemp", mkdtemp)
    if sys.platform != "win32":
        with pytest.raises(BundleError, match="previous contents are unchanged"):
            write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "new"))
        assert snapshot(out) == before


def test_export_o_and_tune_never_adopt_a_planted_temporary(files, mlp_bundle, shared, cli, monkeypatch):
    out, plants = _plants(mlp_bundle, shared)
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10",
                    "--exporter", "torchscript", "--no-torchscript", "--quantize", "fp32", "-o", out)
    assert code == 0, msg
    assert open_bundle(out).manifest["name"] == "out"
    tuned = shared / "tuned.edgeship"
    _plant(mlp_bundle, shared, f".tuned.edgeship.tmp-{_dead_pid()}-old")
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s",
                        __import__("conftest").fake_p50s(lambda n: 1.0))
    _fail_copy(monkeypatch)
    code, msg = cli("tune", out, "-o", tuned)
    assert code == 2 and "nothing was written to" in msg, msg
    assert not os.path.lexists(tuned)


def _modes(root):
    return {p.relative_to(root).as_posix(): stat.S_IMODE(os.lstat(p).st_mode) for p in [root, *root.rglob("*")]}


def _read_only(root):
    for p in sorted(root.rglob("*"), reverse=True):
        p.chmod(0o444 if p.is_file() else 0o555)
    root.chmod(0o555)


def _writable(root):
    for p in [root, *root.rglob("*")]:
        p.chmod(0o644 if p.is_file() else 0o755)


def test_tune_keeps_a_read_only_bundles_modes(bundle_copy, monkeypatch, cli):
    """As root, tune replaced a read-only bundle by a writable one (0755/0644)."""
    from conftest import fake_p50s

    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0))
    _read_only(bundle_copy)
    before = _modes(bundle_copy)
    try:
        code, msg = cli("tune", bundle_copy)
        assert code == 0, msg
        assert _modes(bundle_copy) == before
        assert not temps_beside(bundle_copy), "the old tree was not removed"
    finally:
        _writable(bundle_copy)


def test_replacing_a_zip_keeps_its_mode(mlp_bundle, tmp_path):
    out = tmp_path / "b.edgeship.zip"
    write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "old"))
    out.chmod(0o440)
    write_bundle(out, bundle_files(mlp_bundle), bundle_manifest(mlp_bundle, "new"))
    assert stat.S_IMODE(out.stat().st_mode) == 0o440
