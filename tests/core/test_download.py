"""Tests of ``pplgen.data`` downloads against an HTTP server on 127.0.0.1 that each test starts.

The server serves small files made here (valid IDX and ``.amat`` files, so the
loaders parse what arrives) and records every request; ``DOWNLOADS`` is
replaced by a registry of these files and their SHA-256, so no test can reach
any other address. A transfer can be cut in the middle: the server announces
the whole length, sends half and closes the connection.
"""

import contextlib
import gzip
import hashlib
import http.server
import io
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch

from pplgen import data
from pplgen.cli import main
from pplgen.data import downloads

SHARED_BINARIZED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "binarized-mnist"
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
AMAT_FILES = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}


# --------------------------------------------------------------------------
# Test-made files and a local server
# --------------------------------------------------------------------------


def idx_bytes(array):
    """``array`` (uint8) as gzip-compressed IDX bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return gzip.compress(header + array.tobytes())


def amat_bytes(pixels):
    """0/1 ``pixels`` as ``.amat`` text bytes."""
    return "".join(" ".join(str(value) for value in row) + "\n" for row in pixels).encode()


def make_published_files(seed=0):
    """The files of every data set, by name: ``{name: {file name: (bytes, array)}}``."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in ("mnist-idx", "fashion-mnist"):
        files[name] = {}
        for split, count in (("train", 5), ("test", 3)):
            images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, size=count, dtype=np.uint8)
            files[name][IDX_FILES[split, "images"]] = (idx_bytes(images), images.reshape(count, 784))
            files[name][IDX_FILES[split, "labels"]] = (idx_bytes(labels), labels)
    files["binarized-mnist"] = {}
    for split, count in (("train", 4), ("valid", 2), ("test", 3)):
        pixels = rng.integers(0, 2, size=(count, 784), dtype=np.uint8)
        files["binarized-mnist"][AMAT_FILES[split]] = (amat_bytes(pixels), pixels)
    return files


class Handler(http.server.BaseHTTPRequestHandler):
    """GET of the files under the server's folder; a path in ``cuts`` is cut that many times."""

    def do_GET(self):
        self.server.requests.append(self.path)
        path = self.server.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.server.trickles:  # one byte, then a pause, ... (each read resets a read timeout)
            for byte in body:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(self.server.trickles[self.path])
            return
        if self.server.cuts.get(self.path, 0) > 0:
            self.server.cuts[self.path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 (a free port) serving ``tmp_path / "www"``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.folder, httpd.requests, httpd.cuts, httpd.trickles = tmp_path / "www", [], {}, {}
    httpd.folder.mkdir()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder in ``$PPLGEN_DATA``; no mirror and no proxy from the environment."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PPLGEN_DATA", str(folder))
    for variable in ("PPLGEN_DATA_MIRROR", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    return folder


@pytest.fixture
def published(server, cache, monkeypatch):
    """The test-made files served under ``/origin/<name>/`` and ``/mirror/<name>/``, and the registry naming them."""
    files = make_published_files()
    registry = {}
    for name, contents in files.items():
        for place in ("origin", "mirror"):
            (server.folder / place / name).mkdir(parents=True)
            for filename, (content, _) in contents.items():
                (server.folder / place / name / filename).write_bytes(content)
        digests = {filename: hashlib.sha256(content).hexdigest() for filename, (content, _) in contents.items()}
        registry[name] = data.Download(f"{server.url}/origin/{name}/", digests)
    monkeypatch.setattr(downloads, "DOWNLOADS", registry)
    monkeypatch.setattr(downloads, "DOWNLOAD_RETRIES", 1)  # pooch waits 1 s before the retry
    return files


def files_in(folder):
    """Every file under ``folder`` (temporary downloads included)."""
    return sorted(path for path in Path(folder).rglob("*") if path.is_file())


# --------------------------------------------------------------------------
# Success, and no second download
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist-idx", "fashion-mnist"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_download_then_parse_idx(published, server, cache, name, split):
    images = data.load(name, split, download=True)
    labels = data.load_labels(name, split, download=True)
    expected_images = published[name][IDX_FILES[split, "images"]][1]
    torch.testing.assert_close(images, torch.tensor(expected_images, dtype=torch.float32) / 255)
    assert labels.tolist() == published[name][IDX_FILES[split, "labels"]][1].tolist()
    wanted = [IDX_FILES[split, "images"], IDX_FILES[split, "labels"]]
    assert server.requests == [f"/origin/{name}/{filename}" for filename in wanted]
    assert files_in(cache) == sorted(cache / name / filename for filename in wanted)


def test_download_then_parse_binarized_mnist(published, server, cache):
    for split, filename in AMAT_FILES.items():
        images = data.load("binarized-mnist", split, download=True, binarize="threshold")
        assert images.tolist() == published["binarized-mnist"][filename][1].tolist()
    assert len(server.requests) == 3
    assert files_in(cache) == sorted(cache / "binarized-mnist" / filename for filename in AMAT_FILES.values())


def test_a_second_call_does_not_download_again(published, server, cache):
    first = data.load("mnist-idx", "train", download=True)
    requests = list(server.requests)
    second = data.load("mnist-idx", "train", download=True)
    assert server.requests == requests == ["/origin/mnist-idx/train-images-idx3-ubyte.gz"]
    torch.testing.assert_close(first, second)
    assert data.fetch("mnist-idx") == cache / "mnist-idx"
    assert len(server.requests) == 4  # only the three files not yet there


def test_fetch_fills_the_folder_once(published, server, cache):
    assert data.fetch("binarized-mnist") == cache / "binarized-mnist"
    assert data.fetch("binarized-mnist") == cache / "binarized-mnist"
    assert len(server.requests) == 3
    assert [path.name for path in files_in(cache)] == sorted(AMAT_FILES.values())


def test_root_receives_the_download_instead_of_the_cache(published, server, cache, tmp_path):
    folder = tmp_path / "mine"
    data.load("fashion-mnist", "test", root=folder, download=True)
    assert files_in(folder) == [folder / "t10k-images-idx3-ubyte.gz"]
    assert files_in(cache) == []
    data.load("fashion-mnist", "test", root=folder)  # read offline, as before
    assert len(server.requests) == 1


# --------------------------------------------------------------------------
# Refused and broken transfers leave nothing behind
# --------------------------------------------------------------------------


def test_a_wrong_checksum_is_refused_and_leaves_nothing(published, server, cache, monkeypatch):
    pinned = downloads.DOWNLOADS["mnist-idx"].sha256
    wrong = hashlib.sha256(b"another file").hexdigest()
    monkeypatch.setitem(pinned, "train-labels-idx1-ubyte.gz", wrong)
    actual = hashlib.sha256(published["mnist-idx"]["train-labels-idx1-ubyte.gz"][0]).hexdigest()
    with pytest.raises(data.DownloadError) as error:
        data.load_labels("mnist-idx", "train", download=True)
    message = str(error.value)
    assert "train-labels-idx1-ubyte.gz" in message and wrong in message and actual in message
    assert f"{server.url}/origin/mnist-idx/train-labels-idx1-ubyte.gz" in message
    assert len(server.requests) == 2  # tried again once, refused again
    assert files_in(cache) == []


def test_a_transfer_cut_once_is_retried(published, server, cache):
    path = "/origin/binarized-mnist/binarized_mnist_valid.amat"
    server.cuts[path] = 1
    images = data.load("binarized-mnist", "valid", download=True)
    assert images.tolist() == published["binarized-mnist"]["binarized_mnist_valid.amat"][1].tolist()
    assert server.requests == [path, path]
    assert files_in(cache) == [cache / "binarized-mnist" / "binarized_mnist_valid.amat"]


def test_a_transfer_cut_every_time_fails_clearly_and_leaves_nothing(published, server, cache):
    path = "/origin/fashion-mnist/train-images-idx3-ubyte.gz"
    server.cuts[path] = 10
    with pytest.raises(data.DownloadError, match=re.escape(f"could not download {server.url}{path} (2 attempts)")):
        data.load("fashion-mnist", "train", download=True)
    assert server.requests == [path, path]
    assert files_in(cache) == []


def test_a_404_names_the_url_and_is_not_retried(published, server, cache):
    (server.folder / "origin" / "mnist-idx" / "t10k-images-idx3-ubyte.gz").unlink()
    url = f"{server.url}/origin/mnist-idx/t10k-images-idx3-ubyte.gz"
    with pytest.raises(data.DownloadError, match=re.escape(url) + " answered 404"):
        data.load("mnist-idx", "test", download=True)
    assert len(server.requests) == 1
    assert files_in(cache) == []


def test_a_file_in_place_with_another_digest_is_refused_not_replaced(published, server, cache):
    path = cache / "mnist-idx" / "train-images-idx3-ubyte.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a different copy")
    with pytest.raises(ValueError, match="differs from the published .*delete it to download it again"):
        data.load("mnist-idx", "train", download=True)
    assert path.read_bytes() == b"a different copy"
    assert server.requests == []


# --------------------------------------------------------------------------
# Mirrors
# --------------------------------------------------------------------------


def test_mirror_from_the_environment(published, server, cache, monkeypatch):
    monkeypatch.setenv("PPLGEN_DATA_MIRROR", f"{server.url}/mirror/")
    data.load("binarized-mnist", "test", download=True)
    assert server.requests == ["/mirror/binarized-mnist/binarized_mnist_test.amat"]


def test_mirror_argument_comes_before_the_environment(published, server, cache, monkeypatch):
    monkeypatch.setenv("PPLGEN_DATA_MIRROR", f"{server.url}/elsewhere")
    labels = data.load_labels("fashion-mnist", "test", download=True, mirror=f"{server.url}/mirror")
    assert labels.tolist() == published["fashion-mnist"]["t10k-labels-idx1-ubyte.gz"][1].tolist()
    assert server.requests == ["/mirror/fashion-mnist/t10k-labels-idx1-ubyte.gz"]


def test_a_mirror_must_be_an_http_url(published, server, cache, monkeypatch):
    with pytest.raises(ValueError, match="mirror='/srv/data' is not an http:// or https:// URL.*root="):
        data.load("mnist-idx", download=True, mirror="/srv/data")
    monkeypatch.setenv("PPLGEN_DATA_MIRROR", "ftp://example.invalid/")
    with pytest.raises(ValueError, match="PPLGEN_DATA_MIRROR='ftp://example.invalid/' is not an http"):
        data.load("mnist-idx", download=True)
    assert server.requests == []


def test_a_mirror_needs_download(published, server):
    with pytest.raises(ValueError, match="mirror= is used only with download=True"):
        data.load("mnist-idx", root=server.folder, mirror=server.url)


# --------------------------------------------------------------------------
# Offline behaviour, names and the cache folder
# --------------------------------------------------------------------------


def test_without_download_nothing_is_fetched_and_errors_say_how(published, server, cache, tmp_path):
    with pytest.raises(ValueError, match="needs root=.*download=True"):
        data.load("mnist-idx", "train")
    with pytest.raises(FileNotFoundError, match="binarized_mnist_train.amat.gz exists; pass root=.*or download=True"):
        data.load("binarized-mnist", "train", root=tmp_path)
    assert server.requests == [] and files_in(cache) == []


def test_embedded_mnist_is_never_downloaded(published, server):
    with pytest.raises(ValueError, match=re.escape("load('mnist-idx', split, download=True)")):
        data.load("mnist", download=True)
    assert server.requests == []


def test_cache_folder_is_the_environment_variable_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PPLGEN_DATA", str(tmp_path / "data"))
    assert data.cache_folder() == tmp_path / "data"
    monkeypatch.delenv("PPLGEN_DATA")
    assert data.cache_folder() == Path(platformdirs.user_cache_dir("pplgen"))


def test_cli_download_fetches_and_trains(published, server, cache, tmp_path):
    argv = ["fit", "vae", "--data", "binarized-mnist", "--download", "--split-test", "valid", "--steps", "1"]
    argv += ["--batch-size", "2", "--eval-samples", "2", "--hidden", "8", "--latent", "2", "--accelerator", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert server.requests == [
        "/origin/binarized-mnist/binarized_mnist_train.amat",
        "/origin/binarized-mnist/binarized_mnist_valid.amat",
    ]


def test_cli_refuses_download_for_models_with_their_own_data(tmp_path, capsys):
    assert main(["fit", "lda", "--download", "--out", str(tmp_path)]) == 2
    assert "'lda' does not take --download" in capsys.readouterr().err


# --------------------------------------------------------------------------
# The pinned digests (no network: checked against the copies this machine holds)
# --------------------------------------------------------------------------


def test_every_loader_file_has_a_pinned_sha256():
    assert set(data.DOWNLOADS) == {"mnist-idx", "fashion-mnist", "binarized-mnist"}
    for name in ("mnist-idx", "fashion-mnist"):
        assert set(data.DOWNLOADS[name].sha256) == set(IDX_FILES.values())
    assert set(data.DOWNLOADS["binarized-mnist"].sha256) == set(AMAT_FILES.values())
    for download in data.DOWNLOADS.values():
        assert download.url.startswith(("http://", "https://")) and download.url.endswith("/")
        assert all(re.fullmatch("[0-9a-f]{64}", digest) for digest in download.sha256.values())


@pytest.mark.skipif(not SHARED_BINARIZED_MNIST.is_dir(), reason=f"{SHARED_BINARIZED_MNIST} is absent")
def test_pinned_binarized_mnist_digests_match_the_shared_copies():
    """The shared copies are the published ``.amat`` files, gzip-compressed."""
    for filename, digest in data.DOWNLOADS["binarized-mnist"].sha256.items():
        content = gzip.decompress((SHARED_BINARIZED_MNIST / f"{filename}.gz").read_bytes())
        assert hashlib.sha256(content).hexdigest() == digest, filename


@pytest.mark.skipif(
    not (data.FASHION_MNIST_DEBIAN_ROOT / "t10k-labels-idx1-ubyte.gz").is_file(), reason="no dataset-fashion-mnist"
)
def test_pinned_fashion_mnist_digests_match_debians_copies():
    """Debian ships Zalando's deflate streams under a new gzip header (no file name, a 2020 time stamp);
    putting back the original header (the name, and the 2017-08-31 time stamps) gives the published bytes."""
    stamps = {"train": 1504176606, "t10k": 1504176627}
    for filename, digest in data.DOWNLOADS["fashion-mnist"].sha256.items():
        debian = (data.FASHION_MNIST_DEBIAN_ROOT / filename).read_bytes()
        assert debian[3] == 0, "the Debian header holds no file name"
        stem = filename.removesuffix(".gz")
        header = b"\x1f\x8b\x08\x08" + struct.pack("<I", stamps[stem[:5].rstrip("-")]) + debian[8:10]
        original = header + stem.encode() + b"\0" + debian[10:]
        assert hashlib.sha256(original).hexdigest() == digest, filename


# --------------------------------------------------------------------------
# Transfers that cannot hang, progress off a terminal, cleanup and modes
# --------------------------------------------------------------------------


def slow(server, name, filename, seconds_per_byte):
    server.trickles[f"/origin/{name}/{filename}"] = seconds_per_byte


def test_a_trickling_server_is_stopped_below_the_minimum_rate(published, server, cache, monkeypatch):
    """One byte every 0.2 s (each read resets the read timeout): stopped after the 1 s window, in one line
    naming the URL and the rate, with no temporary file left."""
    monkeypatch.setattr(downloads, "RATE_WINDOW", 1.0)
    monkeypatch.setenv("PPLGEN_DOWNLOAD_MIN_RATE", "100")
    slow(server, "mnist-idx", "t10k-images-idx3-ubyte.gz", 0.2)
    started = time.monotonic()
    with pytest.raises(data.DownloadError, match=r"t10k-images-idx3-ubyte.gz: \d+ bytes/s over the last 1 s, below"):
        data.load("mnist-idx", "test", download=True)
    assert time.monotonic() - started < 10
    assert files_in(cache) == []


def test_a_download_past_its_deadline_is_stopped(published, server, cache, monkeypatch):
    monkeypatch.setenv("PPLGEN_DOWNLOAD_DEADLINE", "0.5")
    slow(server, "mnist-idx", "t10k-images-idx3-ubyte.gz", 0.01)
    with pytest.raises(data.DownloadError, match=r"not complete after 0.5 s .*PPLGEN_DOWNLOAD_DEADLINE"):
        data.load("mnist-idx", "test", download=True)
    assert files_in(cache) == []


def test_progress_shows_as_lines_off_a_terminal(published, server, cache, monkeypatch, capsys):
    monkeypatch.setattr(downloads, "PROGRESS_EVERY", 0.05)
    slow(server, "mnist-idx", "t10k-images-idx3-ubyte.gz", 0.001)
    data.load("mnist-idx", "test", download=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("downloading ")]
    assert lines and re.fullmatch(r"downloading t10k-images-idx3-ubyte.gz: [\d.]+ MB of [\d.]+ MB \(\d+ %\)", lines[0])


def test_a_bad_limit_in_the_environment_is_named(published, server, cache, monkeypatch):
    monkeypatch.setenv("PPLGEN_DOWNLOAD_MIN_RATE", "fast")
    with pytest.raises(ValueError, match=r"\$PPLGEN_DOWNLOAD_MIN_RATE='fast' is not a positive number"):
        data.load("mnist-idx", "test", download=True)


def test_downloaded_files_get_the_mode_the_umask_gives(published, server, cache):
    previous = os.umask(0o022)
    try:
        data.load("mnist-idx", "test", download=True)
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in files_in(cache)}
    assert modes and set(modes.values()) == {0o644}, modes


def test_sigterm_during_a_download_leaves_no_temporary_file(published, server, cache):
    """A real process, terminated while a file trickles in: pooch's temporary file goes with it."""
    slow(server, "mnist-idx", "t10k-images-idx3-ubyte.gz", 0.05)
    script = (
        "import sys\n"
        "from pplgen import data\n"
        "from pplgen.data import downloads\n"
        f"downloads.DOWNLOADS = {{'mnist-idx': data.Download({server.url + '/origin/mnist-idx/'!r}, "
        f"{downloads.DOWNLOADS['mnist-idx'].sha256!r})}}\n"
        "data.load('mnist-idx', 'test', download=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not files_in(cache) and time.monotonic() < deadline:  # pooch's temporary file, being filled
        time.sleep(0.05)
    time.sleep(0.5)
    assert files_in(cache), process.stderr.read() if process.poll() is not None else "the download never started"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert files_in(cache) == []


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_a_cache_that_cannot_be_written_is_one_named_error(published, server, cache, monkeypatch, tmp_path, kind):
    if kind == "a file":
        target = tmp_path / "not-a-folder"
        target.write_text("")
    else:  # a read-only mount, as the file system reports it (root could write a folder of mode 0555)
        target = tmp_path / "read-only"
        target.mkdir()
        monkeypatch.setattr(downloads.os, "access", lambda path, mode: not str(path).startswith(str(target)))
    monkeypatch.setenv("PPLGEN_DATA", str(target))
    with pytest.raises(data.DownloadError, match=r"cannot (create|write) .*the download cache .*set \$PPLGEN_DATA"):
        data.load("mnist-idx", "test", download=True)


def test_the_command_line_reports_an_unwritable_cache_in_one_line(
    published, server, cache, monkeypatch, tmp_path, capsys
):
    target = tmp_path / "not-a-folder"
    target.write_text("")
    monkeypatch.setenv("PPLGEN_DATA", str(target))
    status = main(["fit", "vae", "--data", "mnist-idx", "--download", "--steps", "1", "--out", str(tmp_path / "run")])
    errors = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(errors) == 1 and errors[0].startswith("pplgen: error: cannot create"), errors
