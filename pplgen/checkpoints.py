"""Checkpoints of :func:`pplgen.fit`: what they hold, how they are written and read back.

A checkpoint is one ``torch.save`` file holding only tensors and plain
Python values: the trainer's state (modules, Pyro parameters, engine,
optimizer, step count), the scheduler's, the settings that shaped the run,
the position in the data, the history, and the random-number states of
every rank. It is written by rank 0 alone, to a temporary file that is
fsynced and renamed over the old one (:func:`pplgen.files.write_atomically`),
and read with ``torch.load(weights_only=True)``, so a cut file or a foreign
pickle is refused in one line (:class:`CheckpointError`) and never run.
"""

import pickle
import random

import numpy as np
import torch
import torch.distributed as dist

from pplgen.distributed import rank, world_size
from pplgen.files import write_atomically

FORMAT = "pplgen-checkpoint-3"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, foreign, or written by another configuration."""


def rng_state():
    """This process's torch, CUDA (its current device's), Python and NumPy random states, as tensors and
    plain values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],  # this process's device
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "position": int(np_state[2])},
    }


def set_rng_state(state):
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["position"]))


def write(path, state):
    """Write ``state`` (with this format's tag) to ``path`` atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temporary: torch.save({"format": FORMAT, **state}, temporary))


def read(path):
    """The checkpoint's contents; :class:`CheckpointError` in one line for a file that is not one.

    Read with ``weights_only=True``: a file holding anything but tensors and plain values is refused, never run.
    """
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values, so it is not a pplgen checkpoint "
            "and was not loaded; start a new run or point to the right file."
        ) from None
    except Exception as error:  # torch.load fails in many ways on a cut or foreign file
        raise CheckpointError(
            f"{path} is truncated or is not a checkpoint ({type(error).__name__}); start a new run, or resume "
            "from an intact copy."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pplgen checkpoint (format {FORMAT}); start a new run.")
    return state


def check_resumable(path, state, engine_name, settings):
    """Refuse, by name, a checkpoint of another engine or written with other settings."""
    if state["engine_name"] != engine_name:
        raise CheckpointError(
            f"{path} was written by engine '{state['engine_name']}', not '{engine_name}'; "
            "resume with the same engine or start a new checkpoint."
        )
    written = state["settings"]
    changed = {k: (written[k], v) for k, v in settings.items() if k in written and written[k] != v}
    if changed:
        described = "; ".join(f"{k} was {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise CheckpointError(
            f"{path} was trained with other settings ({described}); an exact resume needs the same "
            "ones: resume with the settings that wrote it, or start a new run."
        )


def save(result, schedule, epoch, skip, settings, loader=None):
    """Rank 0 writes the checkpoint, with every rank's RNG states; the others wait until it is written."""
    rng = [rng_state()]
    if world_size() > 1:
        rng = [None] * world_size()
        dist.all_gather_object(rng, rng_state())
    failure = None
    if rank() == 0:
        state = {
            "engine_name": result.engine.name,
            "settings": settings,
            "trainer": result.training_step.state_dict(),
            "scheduler": None if schedule is None else schedule.state_dict(),
            "rng": rng,
            "progress": {"epoch": epoch, "skip": skip, "loader": loader},
            "history": result.history,
            "evaluations": result.evaluations,
        }
        try:
            write(result.checkpoint, state)
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
            failure = error
    _raise_on_every_rank(failure, f"cannot write the checkpoint {result.checkpoint}")


def _raise_on_every_rank(failure, what):
    """Raise rank 0's ``failure`` (or nothing) on every rank, so no rank waits for one that stopped; the
    broadcast is also the barrier after rank 0's write."""
    message = [None if failure is None else f"{what}: {_first_line(failure)}"]
    if world_size() > 1:
        dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise OSError(message[0]) from failure


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def resume(result, schedule, settings):
    """Load the checkpoint into the run; returns ``(epoch, batches to skip, the DataLoader's state)``."""
    state = read(result.checkpoint)
    check_resumable(result.checkpoint, state, result.engine.name, settings)
    try:
        result.training_step.load_state_dict(state["trainer"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{result.checkpoint} does not fit this model, guide and engine (another architecture or "
            f"options?): {str(error).rstrip('. ')}. Resume with the configuration that wrote it, or start a new checkpoint."
        ) from error
    if schedule is not None and state["scheduler"] is not None:
        schedule.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"][rank()])
    result.history = state["history"]
    result.evaluations = state["evaluations"]
    return state["progress"]["epoch"], state["progress"]["skip"], state["progress"].get("loader")
