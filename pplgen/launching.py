"""Processes for :func:`pplgen.fit`: launching them with Lightning Fabric, seeding each rank, and refusing
programs whose data cannot be split over them.

Fabric starts the processes (its launcher for ``devices=N``; torchrun or SLURM
for several nodes, which it detects) and sets up the process group; pplgen
shards every batch and sums gradients and engine statistics over the ranks
itself (:mod:`pplgen.distributed`).
"""

import atexit
import os

import torch
import torch.distributed as dist

from pplgen import inference
from pplgen.distributed import data_parallel, data_plates, world_size


def check_parallel(engine, probe, model, batch):
    """The model's data plates, after refusing an engine whose estimator does not split over the data rows."""
    plates = data_plates(model, batch)
    if not plates:
        raise ValueError(
            f"no plate of the model follows the batch's rows, so the data cannot be split over {world_size()} "
            "processes; put the observations in pyro.plate('data', len(x)) or fit with devices=1."
        )
    if getattr(engine, "needs_common_scale", False) and not probe.particles.factor_dims:
        raise ValueError(
            f"{engine.name}'s estimator needs log-weights that factorize over the data rows to split them over "
            f"{world_size()} processes, but the program has latents outside its data plates {sorted(plates)}; fit it "
            f"with devices=1, or with {' or '.join(inference.per_site_engines())}, whose estimators split."
        )
    return plates


def launch(execution):
    """A launched Fabric for an :class:`~pplgen.options.Execution` (one line naming the options when Fabric
    refuses them); on CPU with several processes, each process's share of the cores. The precision is
    applied by :class:`~pplgen.step.TrainingStep`."""
    # Imported here: importing lightning_fabric installs warning filters, which `import pplgen` should not.
    from lightning_fabric import Fabric

    try:
        fabric = Fabric(
            accelerator=execution.accelerator,
            devices=execution.devices,
            num_nodes=execution.num_nodes,
            strategy=execution.strategy,
        )
    except (ValueError, RuntimeError, TypeError) as error:
        message = str(error).strip().splitlines()[0]
        raise ValueError(
            f"accelerator={execution.accelerator!r}, devices={execution.devices!r}, num_nodes={execution.num_nodes!r}, "
            f"strategy={execution.strategy!r} cannot run here: {message}"
        ) from None
    fabric.launch()
    data_parallel(fabric.world_size > 1)
    if fabric.world_size > 1:
        atexit.unregister(_leave_process_group)  # once per process, however many fits it runs
        atexit.register(_leave_process_group)
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    return fabric


def _leave_process_group():
    """Destroy the process group while the interpreter is whole: a gloo group left to the interpreter's own
    teardown can abort the process as it exits (its worker threads still hold work), after a run that
    finished."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed, index):
    """Rank ``index``'s seed for particles: rank 0 keeps ``seed``, so a one-process run is rank 0's."""
    return (seed * 1_000_003 + index * 7_919) % 2**32
