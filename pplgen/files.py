"""Writing files so that a crash never leaves half of one: the one atomic writer of checkpoints, metrics and figures.

:func:`write_atomically` has ``write`` fill a temporary file beside the
target, flushes it to disk, renames it over the target and flushes the
folder's entry, so after a crash at any moment the target holds either its
old contents or the new ones, and no temporary file is left behind.
"""

import os
from pathlib import Path


def write_atomically(path, write):
    """Call ``write(temporary path)``, then replace ``path`` by what it wrote; returns ``path``.

    The temporary file keeps ``path``'s suffix, so writers that choose a
    format by suffix (``savefig``, ``to_netcdf``) choose the target's.
    """
    path = Path(path)
    temporary = path.with_name(f"{path.name}.tmp{path.suffix}")
    try:
        write(str(temporary))
        _flush(temporary)
        os.replace(temporary, path)
        _flush_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _flush(path):
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _flush_folder(folder):
    """Make the rename durable: fsync the folder's entry (POSIX; folders cannot be opened on Windows)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
