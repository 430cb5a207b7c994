"""Limits on what edgeship reads, checked before it allocates: files, zip members, .npy/.npz arrays.

A crafted input can declare any size: a manifest padded to GiBs, a zip member whose small
header hides a stream that inflates to GiBs, an .npz of compressed zeros, an .npy header that
declares 10^12 elements, a FIFO or ``/dev/zero`` passed as a file. Every reader here

- opens without blocking and refuses anything but a regular file (:func:`open_regular`), and
  where a link must not be followed refuses it in the same step (``O_NOFOLLOW``);
- reads and hashes no more than a bound (:func:`read_at_most`, :func:`sha256_at_most`);
- reads zip members in chunks, never past the size their header declares (:func:`read_member`),
  and refuses a member that inflates more than :data:`MAX_RATIO` times;
- reads an .npy header first and refuses an array larger than its member or than the budget
  before numpy allocates it (:func:`read_npz`, :func:`read_npy`).

The array budget (golden files, ``--example-inputs``, ``--inputs``, ``--calibration``, ``run
--input``) is :data:`DEFAULT_ARRAY_MB` MiB per file, raised with the environment variable
``EDGESHIP_MAX_ARRAY_MB`` (MiB, a number above 0 and at most :data:`MAX_ARRAY_MB`; anything
else is a usage error, not ignored) where real data needs more. Manifests are at most
:data:`MAX_MANIFEST_BYTES`.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from edgeship.errors import EdgeshipError, SpecError
from edgeship.fileio import open_regular as open_regular  # re-exported: bundle readers import them from here
from edgeship.fileio import read_at_most as read_at_most

MAX_MANIFEST_BYTES = 16 << 20
DEFAULT_ARRAY_MB = 256
MAX_RATIO = 200  # deflate of real weights and data: ~1.1x; of zeros: ~1000x
RATIO_FLOOR = 1 << 20  # members below 1 MiB may compress as they like
CHUNK = 1 << 20
ARRAY_ENV = "EDGESHIP_MAX_ARRAY_MB"
MAX_ARRAY_MB = 1 << 30  # 1 PiB: far above any memory, still an exact integer count of bytes


def array_budget() -> int:
    """Bytes of arrays one .npz/.npy file may hold (``EDGESHIP_MAX_ARRAY_MB``, default 256 MiB).

    Raises:
        SpecError: the variable is set to something other than a number of MiB above 0 and at
            most :data:`MAX_ARRAY_MB`.
    """
    raw = os.environ.get(ARRAY_ENV, "").strip()
    if not raw:
        return DEFAULT_ARRAY_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and 0 < mb <= MAX_ARRAY_MB):
        raise SpecError(f"{ARRAY_ENV}={raw[:40]!r}: use a number of MiB above 0 and at most {MAX_ARRAY_MB} "
                        f"(default {DEFAULT_ARRAY_MB}), e.g. {ARRAY_ENV}=1024, or unset it.")
    return int(mb * (1 << 20))


def sha256_at_most(f: IO[bytes], limit: int) -> tuple[str, int]:
    """(the sha256, the count) of up to ``limit`` + 1 bytes of ``f``, read in chunks: a file that
    grows, or never ends, is hashed no further than one byte past ``limit``."""
    h, n = hashlib.sha256(), 0
    while n <= limit:
        chunk = f.read(min(CHUNK, limit + 1 - n))
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def read_regular_file(path: Path, what: str, error: type[EdgeshipError]) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path, what, error) as f:
        try:
            return f.read()
        except OSError as e:
            raise error(f"{what}: cannot read it ({path}: {e.strerror or e}).") from e


def check_ratio(info: zipfile.ZipInfo, where: str, error: type[EdgeshipError]) -> None:
    """Refuse a zip member that declares more than :data:`MAX_RATIO` times its compressed size."""
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise error(
            f"{where}: zip member {info.filename!r} declares {info.file_size} bytes from "
            f"{info.compress_size} compressed (over {MAX_RATIO}x): refused as a decompression bomb."
        )


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local header (PKWARE APPNOTE 4.3.7)


def check_members(z: zipfile.ZipFile, source: IO[bytes], size: int, where: str, error: type[EdgeshipError]) -> None:
    """Refuse a zip (``source``, ``size`` bytes long) that inflates too much in all or whose members overlap.

    - all members together may declare at most :data:`MAX_RATIO` times the zip's size (plus
      :data:`RATIO_FLOOR`): :func:`check_ratio` bounds one member, and thousands of small members
      (each under the floor) would otherwise multiply it;
    - each member's data must end before the next member's header (or the central directory)
      begins: members that share their bytes (a "quoted overlap" bomb) are refused, as zipfile in
      Python >= 3.12 refuses them on reading.

    Raises:
        error: either one.
    """
    infos = z.infolist()
    declared = sum(i.file_size for i in infos)
    if declared > MAX_RATIO * size + RATIO_FLOOR:
        raise error(f"{where}: its {len(infos)} zip members declare {declared} bytes in all from a {size}-byte zip "
                    f"(over {MAX_RATIO}x): refused as a decompression bomb.")
    end = z.start_dir
    for info in sorted(infos, key=lambda i: i.header_offset, reverse=True):
        source.seek(info.header_offset)
        header = source.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise error(f"{where}: zip member {info.filename!r} has no local header at offset {info.header_offset}; "
                        "the zip is corrupt.")
        fields = _LOCAL_HEADER.unpack(header)
        data_end = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1] + info.compress_size
        if data_end > end:
            raise error(f"{where}: zip member {info.filename!r} overlaps the next member or the central directory "
                        f"(its data ends at byte {data_end}, past {end}): refused as a decompression bomb.")
        end = info.header_offset


def iter_member(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A member's bytes in chunks; zipfile stops at the size its header declares."""
    with z.open(info) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str,
                error: type[EdgeshipError]) -> bytes:
    """A member's bytes, refused when its header declares more than ``limit`` bytes."""
    if info.file_size > limit:
        raise error(f"{where}: zip member {info.filename!r} declares {info.file_size} bytes; at most {limit} are read.")
    check_ratio(info, where, error)
    return b"".join(iter_member(z, info))


def _array_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as e:
        raise ValueError(f"not a numpy array ({e})") from e
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(f)
    return tuple(shape), dtype


def _check_array(f: IO[bytes], size: int, budget: int, name: str) -> int:
    """The bytes an .npy stream's header declares, checked against its ``size`` and ``budget``."""
    try:
        shape, dtype = _array_header(f)
    except ValueError as e:
        raise ValueError(f"{name} is {e}") from e
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects; arrays are read with allow_pickle=False")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > size:
        raise ValueError(f"{name}'s header declares {nbytes} bytes ({dtype}{list(shape)}) but it holds {size}")
    if nbytes > budget:
        raise ValueError(f"{name} holds {nbytes} bytes of arrays, over the {budget >> 20} MiB limit "
                         f"(raise it with {ARRAY_ENV})")
    return nbytes


def read_npz(source: bytes | Path, what: str, error: type[EdgeshipError], budget: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz (its bytes or a regular file), sizes checked before allocating.

    Raises:
        error: not a readable .npz of plain arrays, or arrays over the budget (``what`` names it).
    """
    budget = array_budget() if budget is None else budget
    f: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else open_regular(source, what, error)
    out: dict[str, np.ndarray] = {}
    try:
        with f, zipfile.ZipFile(f) as z:
            for info in z.infolist():
                key = info.filename.removesuffix(".npy")
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {key!r} is not a numpy array")
                check_ratio(info, what, error)
                with z.open(info) as member:
                    budget -= _check_array(member, info.file_size, budget, f"member {key!r}")
                with z.open(info) as member:
                    out[key] = np.lib.format.read_array(member, allow_pickle=False)
    except EdgeshipError:
        raise
    except Exception as e:  # zipfile, numpy's header parser, zlib: all mean "not a valid .npz"
        raise error(f"{what} is not a readable .npz of arrays, so edgeship cannot read it ({e}).") from e
    return out


def read_npy(path: Path, what: str, error: type[EdgeshipError]) -> np.ndarray:
    """One array from an .npy file, its size checked before allocating."""
    with open_regular(path, what, error) as f:
        try:
            _check_array(f, os.fstat(f.fileno()).st_size, array_budget(), str(path))
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        except Exception as e:
            raise error(f"{what} is not a readable .npy array, so edgeship cannot read it ({e}).") from e
