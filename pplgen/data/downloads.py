"""Downloads of the published image files, checked against pinned SHA-256 digests.

:func:`fetch` fills the folder of one data set; ``load(..., download=True)``
fetches the one file it reads. Both go through ``pooch``: each file is
checked against the digest pinned in :data:`DOWNLOADS`, written to a
temporary file and moved into place only when its digest matches, so a data
file's name never holds a partial or unverified copy. A broken transfer is
tried again :data:`DOWNLOAD_RETRIES` times from its start; a 4xx answer
fails at once. A file already in place is checked, never downloaded again,
and refused (not replaced) when its digest differs.

A transfer cannot hang: each file has a total deadline
(``$PPLGEN_DOWNLOAD_DEADLINE`` seconds, default :data:`DEADLINE`), and a
transfer slower than ``$PPLGEN_DOWNLOAD_MIN_RATE`` bytes per second (default
:data:`MIN_RATE`) over :data:`RATE_WINDOW` seconds is stopped, each in one
line naming the URL. Progress shows as a bar on a terminal and as a line every
:data:`PROGRESS_EVERY` seconds otherwise. The temporary file is removed however
the download ends (an error, Ctrl-C, SIGTERM), and a downloaded file gets the
mode the umask gives new files (``0644`` under the usual ``022``), so a shared
cache is readable by the group.

Files go to ``root=`` when given, else to ``cache_folder() / name``. A mirror
(``mirror=`` or ``$PPLGEN_DATA_MIRROR``) is an http(s) base URL laid out like
the cache, ``<mirror>/<name>/<file>``:

>>> from pplgen import data
>>> folder = data.fetch("binarized-mnist")                       # three .amat files
>>> folder = data.fetch("mnist-idx", mirror="http://data.example/pplgen")
"""

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests
import urllib3
from tqdm.auto import tqdm

_CACHE_ENV = "PPLGEN_DATA"
_MIRROR_ENV = "PPLGEN_DATA_MIRROR"


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
#: Seconds a file's download may take in all (``$PPLGEN_DOWNLOAD_DEADLINE``).
DEADLINE = 3600.0
#: Bytes per second a transfer must keep up over :data:`RATE_WINDOW` seconds (``$PPLGEN_DOWNLOAD_MIN_RATE``).
MIN_RATE = 1024.0
RATE_WINDOW = 30.0
#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_EVERY = 5.0
#: Seconds a read may wait for the next bytes before the connection counts as broken (and is tried again).
READ_TIMEOUT = 30.0


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


def _limit(variable, default):
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        limit = float(value)
    except ValueError:
        limit = -1.0
    if not limit > 0:
        raise ValueError(
            f"${variable}={value!r} is not a positive number of {'seconds' if 'DEADLINE' in variable else 'bytes per second'}"
        )
    return limit


class _Downloader(pooch.HTTPDownloader):
    """pooch's HTTP downloader, streaming under a deadline and a minimum rate with progress (see the module
    docs); a 4xx answer (absent, forbidden) fails at once: trying again cannot help."""

    def __call__(self, url, output_file, store, check_only=False):
        if check_only:
            return super().__call__(url, output_file, store, check_only=True)
        try:
            with requests.get(url, stream=True, timeout=READ_TIMEOUT) as response:
                response.raise_for_status()
                with open(output_file, "w+b") as file:
                    _copy(url, response, file)
        except requests.HTTPError as error:
            status = getattr(error.response, "status_code", None)
            if status is None or not 400 <= status < 500 or status in (408, 429):
                raise
            raise DownloadError(
                f"{url} answered {status} {error.response.reason}: the server does not give this file; pass "
                f"mirror= (or set ${_MIRROR_ENV}) a server that does, or root= a folder that holds it"
            ) from error


def _limits():
    """The deadline and the minimum rate of a download, from the environment or the defaults."""
    return _limit("PPLGEN_DOWNLOAD_DEADLINE", DEADLINE), _limit("PPLGEN_DOWNLOAD_MIN_RATE", MIN_RATE)


def _copy(url, response, file):
    """Write the body of ``response`` to ``file`` as it arrives, stopping a transfer past the deadline or below
    the minimum rate (one :class:`DownloadError` naming the URL)."""
    deadline, min_rate = _limits()
    total = int(response.headers.get("Content-Length") or 0) or None
    name = url.rsplit("/", 1)[-1]
    start = window_start = last_line = time.monotonic()
    received = window_bytes = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not sys.stderr.isatty()) as bar:
        while chunk := _read_some(response):
            file.write(chunk)
            received += len(chunk)
            window_bytes += len(chunk)
            bar.update(len(chunk))
            now = time.monotonic()
            if now - start > deadline:
                raise DownloadError(
                    f"{url}: not complete after {deadline:g} s ({received} bytes); stopped. Try again later, "
                    f"raise $PPLGEN_DOWNLOAD_DEADLINE, or pass mirror= a faster copy"
                )
            if now - window_start >= RATE_WINDOW:
                rate = window_bytes / (now - window_start)
                if rate < min_rate:
                    raise DownloadError(
                        f"{url}: {rate:.0f} bytes/s over the last {now - window_start:.0f} s, below "
                        f"$PPLGEN_DOWNLOAD_MIN_RATE={min_rate:g}; stopped. Try again later or pass mirror= a faster copy"
                    )
                window_start, window_bytes = now, 0
            if bar.disable and now - last_line >= PROGRESS_EVERY:
                of = f" of {total / 1e6:.1f} MB ({100 * received / total:.0f} %)" if total else ""
                print(f"downloading {name}: {received / 1e6:.1f} MB{of}", file=sys.stderr, flush=True)
                last_line = now


def _read_some(response):
    """The bytes that have arrived (at most 64 KiB, at least one unless the body ended); a broken connection
    is a ``requests`` error, as ``iter_content`` would raise (pooch tries it again)."""
    try:
        return response.raw.read1(1 << 16, decode_content=True)
    except urllib3.exceptions.HTTPError as error:
        raise requests.exceptions.ConnectionError(error) from error


@contextlib.contextmanager
def _terminate_as_exit():
    """SIGTERM raises ``SystemExit`` while a file downloads, so the temporary file is removed as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _readable_as_umask_allows(path):
    """Give ``path`` the mode a new file gets under the umask (pooch's temporary file was ``0600``)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _check_sha256(path, expected):
    """Refuse a file already in place whose digest is not the published one (it is never overwritten)."""
    actual = pooch.file_hash(str(path), alg="sha256")
    if actual != expected:
        raise ValueError(
            f"{path}: SHA-256 {actual} differs from the published {expected}; it is corrupt or another "
            "copy of the data: delete it to download it again, or leave out download=True to read it as it is"
        )


def _check_writable(folder, root):
    """The folder downloads go to can be created and written, or one line says which and what to do."""
    where = "root=" if root is not None else f"the download cache (${_CACHE_ENV} or the user cache folder)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(
            f"cannot create {folder}, {where}: {error.strerror or error}; set ${_CACHE_ENV} to a writable folder "
            "or pass root= (--root) one"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadError(
            f"cannot write {folder}, {where}: it is read-only here; set ${_CACHE_ENV} to a writable folder or pass "
            "root= (--root) one"
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
    _limits()  # a bad limit in the environment is named before anything is fetched
    _check_writable(folder, access.root)
    store = pooch.create(
        path=folder,
        base_url=base_url,
        registry={filename: f"sha256:{expected}"},
        retry_if_failed=DOWNLOAD_RETRIES,
    )
    url, attempts = store.get_url(filename), DOWNLOAD_RETRIES + 1
    try:
        with _terminate_as_exit():
            path = Path(store.fetch(filename, downloader=_Downloader()))
        _readable_as_umask_allows(path)
        return path
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
