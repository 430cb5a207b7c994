"""The bundle: layout, manifest, verification on read, atomic write, golden files.

Everything here is torch- and onnx-free; ``edgeship.load`` and ``edgeship check`` read bundles
with numpy and onnxruntime alone.
"""

from edgeship.bundle.layout import MANIFEST, SCHEMA_VERSION, SUFFIX, check_relpath, sha256_bytes, sha256_file
from edgeship.bundle.manifest import parse_manifest
from edgeship.bundle.read import Bundle, open_bundle
from edgeship.bundle.write import write_bundle

__all__ = ["MANIFEST", "SCHEMA_VERSION", "SUFFIX", "Bundle", "check_relpath", "open_bundle", "parse_manifest",
           "sha256_bytes", "sha256_file", "write_bundle"]
