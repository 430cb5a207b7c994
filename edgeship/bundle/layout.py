"""The bundle's layout: file names, schema version, checksums and the path rule.

A bundle is a directory ``NAME.edgeship/`` or the same tree zipped as ``NAME.edgeship.zip``::

    manifest.json        schema_version, io spec, variants, defaults, files (sha256, size), ...
    models/fp32.onnx     one ONNX file per variant
    torchscript/model.pt when that stage ran
    golden/inputs.npz    golden inputs and the eager outputs for them,
    golden/outputs.npz   so any machine can re-check parity with onnxruntime alone
    report.json          stage timings, parity tables (and latency, with export --profile)
    report.html          with export --profile: the same for people, with latency charts

Checksums detect corruption and accidental edits; they are not signatures (see README).
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path, PurePosixPath

from edgeship.errors import BundleError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
SUFFIX = ".edgeship"
CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_relpath(rel: str) -> str:
    """Refuse absolute, empty, backslashed, ``.``/``..`` or control-character paths inside a bundle.

    An accepted path names exactly one file below the bundle root, written one way only.
    """
    if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or "\\" in rel \
            or any(part in ("..", ".", "") for part in rel.split("/")) or rel.startswith("~") \
            or (len(rel) > 1 and rel[1] == ":") or any(_is_control(c) for c in rel):
        raise BundleError(
            f"bundle path {rel!r} escapes the bundle or is not a plain relative path (absolute, '..', "
            "'.', empty part, control, format (bidi) or separator character); the bundle was tampered with."
        )
    return rel


def _is_control(c: str) -> bool:
    """NUL and other control characters, bidi overrides and other format characters, line and
    paragraph separators, unassigned and private-use code points."""
    return unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
