"""Local data files: the IDX and binarized-MNIST ``.amat`` formats (plain or gzip), and where files are.

Readers check what they read against what the format announces and name the
file in every error, so a truncated or corrupt copy is reported as such
rather than as a shape mismatch later:

>>> from pplgen.data import read_idx
>>> images = read_idx("train-images-idx3-ubyte.gz")   # (60000, 28, 28) uint8
"""

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np

#: Pixels of one flattened 28x28 image.
_IMAGE_SIZE = 28 * 28
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path):
    """Return the content of ``path``, decompressed when it is gzip data."""
    raw = Path(path).read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({error}); download the file again") from error


def read_idx(path):
    """Read an IDX file (plain or gzip) into a NumPy array.

    The format (LeCun's MNIST page) is a 4-byte magic number ``0, 0, type,
    ndim``, then ``ndim`` big-endian uint32 sizes, then the values in
    big-endian row-major order.

    :raises ValueError: if the magic number is wrong or the file holds more or
        fewer bytes than its header announces.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
            "pass IDX files such as train-images-idx3-ubyte[.gz]"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {header_size}); download the file again"
        )
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header_size + dtype.itemsize * int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) but the file has {len(raw)} bytes; "
            "the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def read_amat(path):
    """Read a binarized-MNIST ``.amat`` text file (plain or ``.gz``) as uint8.

    Each line holds one image: 784 values ``0`` or ``1`` separated by spaces.

    :raises ValueError: if a line does not hold 784 values or a value is not 0 or 1.
    """
    try:
        pixels = np.loadtxt(path, dtype=np.uint8, ndmin=2)
    except (ValueError, EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable binarized-MNIST .amat file ({error}); download it again") from error
    if pixels.shape[1] != _IMAGE_SIZE or pixels.max(initial=0) > 1:
        raise ValueError(
            f"{path}: expected lines of {_IMAGE_SIZE} values 0 or 1, found shape {pixels.shape} "
            f"with maximum {pixels.max(initial=0)}; the file is truncated or corrupt"
        )
    return pixels


def _find_file(root, stem, suffixes, hint):
    """Return ``root/stem+suffix`` for the first suffix that exists."""
    candidates = [Path(root) / (stem + suffix) for suffix in suffixes]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked_for = ", ".join(str(candidate) for candidate in candidates)
    raise FileNotFoundError(f"none of {looked_for} exists; {hint}")


def _package_folder(package, what):
    """The installed folder of ``package``, found without importing it (``what`` says why it is needed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{what}: pip install {package} (or pip install pplgen[data])")
    return Path(spec.submodule_search_locations[0])
