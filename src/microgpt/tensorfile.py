"""Read and write the safetensors file format with the standard library alone.

A file is: 8 bytes (little-endian u64) giving the header's length, the header (JSON: for each
tensor its dtype, shape and byte range in the data; plus `__metadata__`, string to string),
then the raw little-endian data. Nothing in it is executable, unlike a pickle, and PyTorch,
NumPy and JAX users can open it with the `safetensors` package. Only float64 is used here.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import sys
from array import array
from pathlib import Path


class FormatError(ValueError):
    """The bytes are not a well-formed safetensors file (truncated, corrupt, wrong dtype)."""


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: a reader (or a
    crash) sees the old file or the new one, never half of one. The file gets the permissions
    of any new file under the user's umask (0644 under umask 022), not mkstemp's 0600, so that
    others can read what a run wrote."""
    path = Path(path)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> tuple[int, str]:
    """A new, uniquely named file in `path`'s folder, opened for writing, mode 0666 less the
    umask (as `open` creates files)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def dumps(tensors: dict[str, tuple[list[int], list[float]]], metadata: dict[str, str]) -> bytes:
    """`tensors` maps a name to (shape, flat values)."""
    header: dict = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name, (shape, values) in tensors.items():
        chunk = _to_little_endian(array("d", values)).tobytes()
        header[name] = {
            "dtype": "F64",
            "shape": shape,
            "data_offsets": [offset, offset + len(chunk)],
        }
        chunks.append(chunk)
        offset += len(chunk)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to a multiple of 8
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def loads(blob: bytes) -> tuple[dict[str, tuple[list[int], list[float]]], dict[str, str]]:
    """The inverse of `dumps`; raises FormatError on anything malformed."""
    if len(blob) < 8:
        raise FormatError("file is too short to be a checkpoint")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise FormatError("header runs past the end of the file (truncated?)")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError("header is not valid JSON") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    data = memoryview(blob)[8 + n :]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"tensor {name!r} has a malformed entry") from None
        if dtype != "F64":
            raise FormatError(f"tensor {name!r} is {dtype}, expected F64")
        count = 1
        for d in shape:
            count *= d
        if not 0 <= begin <= end <= len(data) or end - begin != 8 * count:
            raise FormatError(f"tensor {name!r} lies outside the file (truncated?)")
        values = array("d")
        values.frombytes(data[begin:end])
        tensors[name] = (shape, _to_little_endian(values).tolist())
    return tensors, metadata


def _to_little_endian(a: array) -> array:
    if sys.byteorder == "big":
        a.byteswap()
    return a
