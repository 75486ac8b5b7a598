"""Data parallel training, exactly: N processes take one step on the union of their shards.

:func:`pplgen.fit` with ``devices=N`` runs N processes (launched by Lightning
Fabric, or by ``torchrun`` / SLURM, which Fabric detects). Each global batch
is split into N contiguous shards (:func:`shard`), one per rank, and every
rank's surrogate is the engine's objective on its shard. The step's update is
then the single-process update on the whole batch when

* gradients are **summed** over ranks (:func:`sum_gradients`), since an
  engine's surrogate is a sum over the data, not a mean. (DDP's reducer
  averages instead, and it cannot see the gradients an engine takes inside
  its forward with ``torch.autograd.grad``, such as avb's discriminator
  updates; a flat all-reduce after ``backward`` sees every parameter, in
  modules or in Pyro's parameter store.)
* sites are scaled so that the ranks' objectives sum to the batch's
  (:class:`ShardScale`): a site outside the data plates (a global latent)
  counts once over all ranks, and a plate that subsamples
  (``pyro.plate("data", size=N, subsample=...)``) scales each shard as the
  whole batch is scaled, N / batch rather than N / shard;
* engines whose helpers keep statistics or take their own steps reduce them
  over ranks themselves (:func:`all_reduce_sum_`): nvil's running moments are
  those of the whole batch, avb's discriminator steps on the summed gradient,
  so every rank holds the same values.

Each rank draws its own particles, global latents included, so for
estimators linear in the data's terms (svi, nvil, wake_sleep, and the model
update of the others at K = 1) the summed update has the one-process
update's expectation; where the update is deterministic (a MAP / Delta guide)
it is the same to float tolerance. Estimators of a K-sample bound (iwae, rws,
vimco) and avb's per-datum contrast need log-weights that factorize over the
data rows; :func:`pplgen.fit` refuses them, by name, for programs with
latents outside the data plates.

pplgen takes part in a process group only when data parallelism is on
(:func:`data_parallel`): :func:`pplgen.fit` turns it on when it runs several
processes, and a training loop of one's own (``TrainingStep`` under
``torchrun``) turns it on after ``torch.distributed.init_process_group``. A
process group set up for other reasons is left alone. Outside data
parallelism every collective here is the identity, so engines call them
unconditionally.
"""

import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from pyro.poutine.messenger import Messenger

_DATA_PARALLEL = {"on": False}


def data_parallel(on=True):
    """Make pplgen's steps, engines, evaluations and checkpoints work together over the initialized process
    group (or, with ``on=False``, on this process alone); :func:`pplgen.fit` calls it for the processes it
    runs."""
    _DATA_PARALLEL["on"] = bool(on)


def _in_group():
    return _DATA_PARALLEL["on"] and dist.is_available() and dist.is_initialized()


def world_size():
    """How many processes train together: the process group's size under :func:`data_parallel`, else 1."""
    return dist.get_world_size() if _in_group() else 1


def rank():
    """This process's rank under :func:`data_parallel`, else 0."""
    return dist.get_rank() if _in_group() else 0


def all_reduce_sum_(tensor):
    """Sum ``tensor`` over ranks, in place; returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensors):
    """Give every rank rank 0's values of ``tensors``, in place."""
    if world_size() > 1:
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)


def sum_gradients(params):
    """Sum each parameter's gradient over ranks in one flat all-reduce per dtype.

    A parameter that no rank's surrogate reached keeps ``grad = None`` (so the
    optimizer leaves it alone, as in one process); one that some ranks reached
    gets the sum, counting zeros for the others.
    """
    if world_size() == 1:
        return
    by_dtype = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        reached = torch.tensor([p.grad is not None for p in group], dtype=group[0].dtype, device=group[0].device)
        flat = torch.cat(
            [reached] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
        )
        all_reduce_sum_(flat)
        sizes = [p.numel() for p in group]
        for p, was_reached, grad in zip(group, flat[: len(group)].tolist(), flat[len(group) :].split(sizes)):
            p.grad = grad.view_as(p).clone() if was_reached else None


def lost_peer(error):
    """Whether ``error`` is the collective backend reporting that another process went away (gloo's closed or
    reset connection, NCCL's failed communicator)."""
    if isinstance(error, dist.DistBackendError):
        return True
    text = str(error)
    return "gloo" in text and ("Connection" in text or "peer" in text) or "NCCL communicator" in text


def shard(batch, index, count):
    """Rank ``index``'s rows of each tensor argument with the batch's rows (the first tensor argument's
    length); other arguments are passed whole. Shards are contiguous and differ in size by at most one row."""
    if count == 1:
        return tuple(batch)
    rows = next((len(a) for a in batch if isinstance(a, torch.Tensor) and a.dim()), None)
    return tuple(
        a.tensor_split(count)[index] if isinstance(a, torch.Tensor) and a.dim() and len(a) == rows else a for a in batch
    )


def data_plates(model, batch):
    """Names of the model's plates over the batch's rows: those whose size follows the rows, traced on
    one row and on two (from the prior, without gradients, leaving the RNG untouched)."""
    sizes = []
    for rows in (1, 2):
        arguments = tuple(a[:rows] if _is_rows(a, batch) else a for a in batch)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), poutine.block(), pyro.validation_enabled(False), torch.no_grad():
            trace = poutine.trace(model).get_trace(*arguments)
        sizes.append({f.name: f.size for site in trace.nodes.values() for f in site.get("cond_indep_stack", ())})
    return frozenset(name for name, size in sizes[0].items() if size == 1 and sizes[1].get(name) == 2)


def _is_rows(argument, batch):
    return isinstance(argument, torch.Tensor) and argument.dim() > 0 and len(argument) == len(batch[0])


class ShardScale(Messenger):
    """Scales each rank's sites so that the ranks' summed objectives are the whole batch's.

    * A site outside the data plates (a global latent, a prior on weights) is
      scored by every rank: it is scaled by 1 / ranks, so it counts once.
    * A site in a data plate that subsamples (``pyro.plate(name, size,
      subsample=...)``), which Pyro scales by size / shard rows, is scaled by
      shard rows / batch rows, giving size / batch rows, the batch's scale.
    * Other sites in data plates are left alone: the shards' sums add up to
      the batch's.
    """

    def __init__(self, plates, shard_rows, batch_rows, ranks):
        super().__init__()
        self.plates = plates
        self.subsample_factor = shard_rows / batch_rows
        self.ranks = ranks

    def _process_message(self, msg):
        if msg["type"] != "sample":
            return
        frames = [f for f in msg["cond_indep_stack"] if f.name in self.plates]
        if not frames:
            msg["scale"] = msg["scale"] / self.ranks
        elif any(f.full_size is not None and f.full_size != f.size for f in frames):
            msg["scale"] = self.subsample_factor * msg["scale"]
