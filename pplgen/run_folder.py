"""Run folders of ``pplgen fit``: one run at a time in a folder, and a folder that describes one run.

::

    with RunFolder(Path("runs/vae"), resume=False, overwrite=False) as out:
        ...  # train, then write out / "metrics.json", the figures and the checkpoint

A run holds its folder for as long as it lives: an exclusive ``flock`` on
``out/.lock``, which the operating system releases when the process ends,
however it ends. A second run into the folder is refused in one line naming
the pid that holds it. Entering also refuses, before anything is written:

* a folder that already holds a run, unless ``resume`` continues it or
  ``overwrite`` replaces it;
* ``resume`` into a run whose checkpoint is gone (nothing to continue from;
  the run is left as it is);
* a path that is a file, or a folder that cannot be written.

``overwrite`` removes the old run's files (:data:`RUN_FILES`) once the folder
is held and before the first step, so an interrupted overwrite leaves only
the new run's checkpoint, never the old run's metrics beside it. A folder
the run created and left empty (a run refused before writing anything) is
removed on exit. Only the first process of a multi-process run holds the
folder; the others write nothing to it.
"""

import os
import shutil
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not kept apart there
    fcntl = None

#: The files a run of ``pplgen fit`` writes into its folder (image, posterior and topic runs), and its loggers'
#: folder.
RUN_FILES = (
    "checkpoint.pt",
    "metrics.json",
    "loss.png",
    "samples.png",
    "reconstructions.png",
    "posterior.nc",
    "graph.png",
    "nuts.nc",
    "comparison.csv",
    "comparison.png",
    "topics.txt",
    "logs",
)
LOCK = ".lock"


class RunFolder:
    """The run folder ``path``, held by this run between ``__enter__`` and ``__exit__`` (see the module docs)."""

    def __init__(self, path, *, resume=False, overwrite=False):
        self.path = Path(path)
        self.resume = bool(resume)
        self.overwrite = bool(overwrite)
        self._lock = None
        self._created = False

    def __enter__(self):
        if not first_process():
            return self.path
        self._check_writable()
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._hold()
            self._check_contents()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.path

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        if self._created and self.path.is_dir() and not any(p.name != LOCK for p in self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
        return False

    def _check_writable(self):
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a folder; give the folder the run should be written to")
        existing = next(folder for folder in (self.path, *self.path.parents) if folder.exists())
        if not existing.is_dir():
            raise ValueError(f"cannot create the run folder {self.path}: {existing} is a file; give another --out")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write the run folder {self.path}: {existing} is not writable; give another --out")

    def _hold(self):
        """Take the folder's lock, or refuse naming the run that holds it."""
        if fcntl is None:
            return
        path = self.path / LOCK
        lock = open(path, "a+")  # noqa: SIM115 (held open for the run's life)
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ValueError(
                f"the run folder {self.path} is in use by another run ({holder}): wait for it to finish, or give "
                "another --out"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        self._lock = lock

    def _check_contents(self):
        held = [name for name in RUN_FILES if (self.path / name).exists()]
        if not held:
            return
        named = ", ".join(held[:2]) + (", ..." if len(held) > 2 else "")
        if self.overwrite:
            for name in held:
                path = self.path / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            return
        if not self.resume:
            raise ValueError(
                f"the run folder {self.path} already holds a run ({named}): pass --resume to continue "
                "it, --overwrite to replace it, or another --out"
            )
        if "checkpoint.pt" not in held:
            raise ValueError(
                f"--resume: the run folder {self.path} holds a run ({named}) but no checkpoint.pt to "
                "continue from; nothing was changed. Pass --overwrite to replace the run, or another --out"
            )


def first_process():
    """Whether this is the first process of its run (a multi-process run's other processes carry their rank
    in the environment Lightning Fabric launches them with)."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK"))
