"""Issue 20, item 18: a bundle file swapped for a FIFO, a link to ``/dev/zero`` or another file
while the bundle is verified or after it was: never a hang, never a MemoryError, never other bytes.

Each case runs in a child process (a hang must not hang the suite) whose address space is capped (a
bug reading ``/dev/zero`` ends in MemoryError there, not in the machine's memory). The swap is made
at a fixed point of the reading code (patched in the child), so no timing decides the outcome; the
child's timeout is only a guard against a hang, far above what a run takes.
"""

import os
import shutil
import subprocess

import pytest
from hostile_helpers import PY, python_env, zip_tree

SCRIPT = r"""
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import edgeship
import edgeship.bundle.read as read
import edgeship.model as model
from edgeship.errors import EdgeshipError

bundle, rel, how, when = sys.argv[1:5]

def swap():
    target = os.path.join(bundle, rel) if os.path.isdir(bundle) else bundle
    os.rename(target, target + ".verified")
    if how == "fifo":
        os.mkfifo(target)
    elif how == "zero":
        os.symlink("/dev/zero", target)
    elif how == "other":  # a plain file of the same size, other bytes
        with open(target, "wb") as f:
            f.write(b"\0" * os.path.getsize(target + ".verified"))

if when == "after":  # verified, then swapped before the variant is read
    real = model.open_bundle
    def open_then_swap(path):
        b = real(path)
        swap()
        return b
    model.open_bundle = open_then_swap
else:  # swapped while verifying: after the listing was checked, before the hashes are
    real_listing = read._compare_listing
    def listing_then_swap(*args):
        real_listing(*args)
        swap()
    read._compare_listing = listing_then_swap
try:
    m = edgeship.load(bundle, variant="fp32")
except EdgeshipError as e:
    print("REFUSED", type(e).__name__, " ".join(str(e).split()))
except MemoryError:
    print("MEMORYERROR")
else:
    import numpy as np
    print("LOADED", m(np.ones((1, 10), np.float32)).tolist())
"""


def _child(*args) -> str:
    p = subprocess.run([PY, "-c", SCRIPT, *map(str, args)], env=python_env(), capture_output=True, text=True,
                       timeout=300)  # a guard against a hang only
    return (p.stdout + p.stderr).strip()


@pytest.mark.parametrize("when", ["after", "during"])
@pytest.mark.parametrize("how", ["fifo", "zero", "other"])
def test_a_folder_bundle_file_swapped_is_refused(bundle_copy, how, when):
    out = _child(bundle_copy, "models/fp32.onnx", how, when)
    assert out.startswith("REFUSED BundleError"), out
    assert "models/fp32.onnx" in out and "Traceback" not in out, out
    if how != "other":
        assert "not a regular file" in out or "symbolic link" in out, out


@pytest.mark.parametrize("how", ["fifo", "zero", "other"])
def test_a_zipped_bundle_swapped_after_verification_reads_what_was_verified(bundle_copy, tmp_path, how):
    """The zip is opened once: what is read later comes from that open file, not from the path."""
    z = zip_tree(bundle_copy, tmp_path / "b.edgeship.zip")
    shutil.rmtree(bundle_copy)
    out = _child(z, "", how, "after")
    assert out.startswith("LOADED"), out


def test_a_manifest_that_is_a_fifo_or_a_link_to_dev_zero_is_refused(bundle_copy, cli):
    manifest = bundle_copy / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    code, msg = cli("inspect", bundle_copy)
    assert code == 2 and "manifest.json" in msg, msg
    manifest.unlink()
    os.symlink("/dev/zero", manifest)
    code, msg = cli("inspect", bundle_copy)
    assert code == 2 and "manifest.json" in msg, msg
