"""Training a model/guide pair with any engine: :func:`fit` and its :class:`Trainer`.

::

    result = pplgen.fit(VAE(), "svi", x_train, epochs=10, valid_data=x_test)
    result.history[-1]["loss"], result.evaluations[-1]["log_likelihood"]

:class:`Trainer` owns one training step (engine → surrogate → backward →
gradients summed over ranks → clip → optimizer) and the optimizer's parameter
groups, one per role; :func:`fit` adds what surrounds the steps: devices and
processes (Lightning Fabric), batching and sharding, seeding, evaluation,
progress bar, history and checkpoints (:mod:`pplgen.checkpoints`).

Reproducibility: the same seed gives the same loss history. Each epoch's
shuffle comes from a generator seeded with ``(seed, epoch)`` and every rank's
RNG states travel in every checkpoint, so ``resume=True`` continues exactly
as the uninterrupted run would.

Devices: ``accelerator``, ``devices``, ``strategy`` and ``precision`` are
Lightning Fabric's (``Fabric(accelerator=..., devices=..., ...)``). With
``devices=N`` (or under ``torchrun`` / SLURM, which Fabric detects) N
processes each take a shard of every batch and one step on the union
(:mod:`pplgen.distributed`): ``batch_size`` is the global batch.
"""

import functools
import math
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from torch.distributions import constraints
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pplgen import checkpoints, inference
from pplgen.checks import distribution_name
from pplgen.distributed import ShardScale, broadcast_, data_plates, rank, shard, sum_gradients, world_size
from pplgen.engine import Engine
from pplgen.evaluate import held_out_scores
from pplgen.particles import is_observation, is_sample_site
from pplgen.probe import dtype_hint
from pplgen.programs import model_and_guide, owning_modules
from pplgen.roles import ROLES, parameter_roles

#: The ``precision`` values :func:`fit` takes (Lightning Fabric's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class NonFiniteLossError(FloatingPointError):
    """A step produced a non-finite surrogate (no parameter was updated) or non-finite parameters."""


class Trainer:
    """One training step of ``engine`` on a model/guide pair.

    :param lr: a learning rate, or ``{"model": ..., "guide": ..., "helper": ...}``
        (roles left out get the optimizer's default).
    :param optimizer: a ``torch.optim.Optimizer`` subclass.
    :param optimizer_options: further keyword arguments for it.
    :param clip_norm: clip the gradient's total norm to this value.
    :param validate_every_step: keep Pyro's distribution checks (arguments
        and support, when Pyro validation is on) after the first step. They
        run in :meth:`setup` and the first step either way; later steps skip
        them by default because they cost about a tenth of a small VAE's step.
    :param precision: ``"32-true"`` (default), ``"bf16-mixed"`` or
        ``"16-mixed"``: the mixed ones run model, guide and engine under
        ``torch.autocast`` (log-densities are still summed in float32, see
        :func:`pplgen.particles.site_log_prob`); ``"16-mixed"`` also scales
        the loss against float16 underflow (``torch.amp.GradScaler``).
    :param compile: run the engine's forward through model and guide as a
        ``torch.compile`` function (graph breaks at Pyro's handlers fall back
        to eager; see ``benchmarks/compiled_step.py``).

    Parameters are sorted into roles on the first step (see :mod:`pplgen.roles`).
    In a multi-process run (:mod:`pplgen.distributed`) each rank calls
    :meth:`step` on its shard; gradients and metrics are summed over ranks.
    """

    def __init__(
        self,
        model,
        guide,
        engine,
        *,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        optimizer_options=None,
        clip_norm=None,
        validate_every_step=False,
        precision="32-true",
        compile=False,
    ):
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer class, got {optimizer!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
        self.model, self.guide = model, guide
        self.engine = engine
        self.optimizer_class = optimizer
        self.learning_rates = _learning_rates(lr)
        if isinstance(lr, dict) and "helper" in lr and engine.fits_own_helpers:
            raise ValueError(
                f"{engine.name} fits its own networks inside its forward, so lr['helper'] would reach nothing; "
                f"drop it and set the engine's own rate instead (e.g. discriminator_lr for avb)"
            )
        self.optimizer_options = dict(optimizer_options or {})
        self.clip_norm = clip_norm
        self.validate_every_step = validate_every_step
        self.precision = precision
        self.forward = torch.compile(self._forward) if compile else self._forward
        self.optimizer = None
        self.scaler = None
        self.roles = None
        self.store_params = {}
        self.num_steps = 0

    def setup(self, *args, **kwargs):
        """Check the pair, sort the parameters into roles and build the optimizer (once); returns the
        pair's probe (:mod:`pplgen.probe`), or None when already set up.

        In a multi-process run every rank then holds rank 0's parameters and buffers (modules built
        without a common seed start alike)."""
        if self.optimizer is not None:
            return None
        probe = self.engine.prepare(self.model, self.guide, *args, **kwargs)
        self.roles = parameter_roles(probe, self.model, self.guide, self.engine)
        self.store_params = probe.store_params
        groups = [
            {
                "params": params,
                "role": role,
                **({"lr": self.learning_rates[role]} if role in self.learning_rates else {}),
            }
            for role, params in self.roles.items()
            if params
        ]
        if not groups:
            trained = "model, guide and engine" if self.engine.needs_guide else "model and engine"
            raise ValueError(f"the {trained} have no parameters to train")
        self.optimizer = self.optimizer_class(groups, **self.optimizer_options)
        if self.precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(_device_of(groups).type)
        broadcast_(self._state_tensors())
        return probe

    def step(self, *args, **kwargs):
        """One update; returns the engine's metrics as floats (summed over ranks; averaged for the engine's
        ``mean_metrics``)."""
        self.setup(*args, **kwargs)
        checks = nullcontext() if self.validate_every_step or self.num_steps == 0 else pyro.validation_enabled(False)
        with checks, self._autocast():
            loss = self.forward(*args, **kwargs)
        self.num_steps += 1
        surrogate, metrics = self._reduced(loss)
        if not math.isfinite(surrogate):
            raise NonFiniteLossError(self._non_finite_message(metrics))
        self._update(loss.surrogate)
        return metrics

    def _forward(self, *args, **kwargs):
        return self.engine(self.model, self.guide, *args, **kwargs)

    def _autocast(self):
        if not self.precision.endswith("-mixed"):
            return nullcontext()
        device = _device_of(self.optimizer.param_groups)
        return torch.autocast(device.type, dtype=torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16)

    def _reduced(self, loss):
        """The surrogate's value and the metrics over all ranks, in one all-reduce and one copy to the host."""
        names = list(loss.metrics)
        dtype = torch.float32 if loss.surrogate.device.type == "mps" else torch.float64  # MPS has no float64
        values = torch.stack([t.detach().to(dtype) for t in (loss.surrogate, *(loss.metrics[n] for n in names))])
        if world_size() > 1:
            dist.all_reduce(values)
            means = torch.tensor([n in self.engine.mean_metrics for n in names], device=values.device)
            values[1:] = torch.where(means, values[1:] / world_size(), values[1:])
        surrogate, *rest = values.tolist()
        return surrogate, dict(zip(names, rest))

    def _update(self, surrogate):
        """One optimizer step along ``-∇ surrogate`` (summed over ranks); parameters it does not reach keep no
        gradient and stay put.

        Raises :class:`NonFiniteLossError` naming the parameter when the step made one non-finite.
        """
        self.optimizer.zero_grad(set_to_none=True)
        (surrogate if self.scaler is None else self.scaler.scale(surrogate)).backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        sum_gradients(params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        # A parameter's sum is NaN or inf when one of its values is (or when they overflow together): one
        # reduction per tensor, a seventeenth of the cost of their norms.
        if not torch.stack([p.detach().sum() for p in params]).isfinite().all():
            raise NonFiniteLossError(self._non_finite_parameter_message())

    def _state_tensors(self):
        """Every parameter and buffer a step reads or changes: modules, Pyro's parameters, the engine."""
        modules = [*owning_modules(self.model, self.guide), self.engine]
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        return tensors + list(self.store_params.values())

    def _non_finite_parameter_message(self):
        role, index = next(
            (group["role"], i)
            for group in self.optimizer.param_groups
            for i, p in enumerate(group["params"])
            if not torch.isfinite(p.detach().sum())
        )
        rates = {group["role"]: group["lr"] for group in self.optimizer.param_groups}
        return (
            f"step {self.num_steps}: engine '{self.engine.name}' made {role} parameter {index} non-finite (NaN or "
            f"inf) with learning rates {rates}; training stopped. Lower the learning rate or clip gradients "
            "(clip_norm=...)."
        )

    def _non_finite_message(self, metrics):
        bad = [name for name, value in metrics.items() if not math.isfinite(value)]
        culprit = f"metric '{bad[0]}' = {metrics[bad[0]]}" if bad else "the surrogate"
        spared = "any parameter" if not self.engine.fits_own_helpers else "the model's and guide's parameters"
        return (
            f"step {self.num_steps}: engine '{self.engine.name}' produced a non-finite loss "
            f"({culprit}); training stopped before updating {spared}. Lower the learning "
            "rate, clip gradients (clip_norm=...), or check the data and the model's scales."
        )

    def state_dict(self):
        modules = dict(zip(("model", "guide"), owning_modules(self.model, self.guide)))
        return {
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "param_store": {name: p.detach().clone() for name, p in self.store_params.items()},
            "engine": self.engine.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "num_steps": self.num_steps,
        }

    def load_state_dict(self, state):
        modules = dict(zip(("model", "guide"), owning_modules(self.model, self.guide)))
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        with torch.no_grad():
            for name, value in state["param_store"].items():
                self.store_params[name].copy_(value)
        self.engine.load_state_dict(state["engine"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.num_steps = state["num_steps"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history`` has one dict per step (``step``, ``epoch``, ``batch_size`` and
    the engine's metrics, batch totals); ``evaluations`` one dict per
    evaluation (``epoch``, ``step``, mean per-datum ``log_likelihood`` and
    ``elbo`` on ``valid_data``, and the ``estimator`` of the log-likelihood).
    In a multi-process run every rank returns the same result.
    """

    model: object
    guide: object
    engine: Engine
    trainer: Trainer
    history: list = field(default_factory=list)
    evaluations: list = field(default_factory=list)
    checkpoint: Path | None = None

    def metric(self, name):
        """One metric over the steps, per datum when it is a batch total."""
        return [
            row[name] / row["batch_size"] if name in ("loss", "elbo", "bound") else row[name] for row in self.history
        ]


@dataclass
class _Plan:
    """What :func:`fit` was asked to do around the steps."""

    total_steps: float
    settings: dict
    valid_data: torch.Tensor | None
    eval_every: int
    eval_samples: int
    ais_options: dict | None
    checkpoint_every: int
    progress: bool
    data_plates: frozenset | None


def _keeps_caller_state(run):
    """``run`` (:func:`fit`) seeds the random number generators and, with several CPU processes, sets the
    thread count; its caller gets its own RNG states (Python, NumPy, torch, CUDA) and threads back."""

    @functools.wraps(run)
    def scoped(*args, **kwargs):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        python_state, numpy_state, threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=devices):
                return run(*args, **kwargs)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            torch.set_num_threads(threads)

    return scoped


@_keeps_caller_state
def fit(
    model,
    engine="svi",
    data=None,
    *,
    guide=None,
    epochs=None,
    steps=None,
    batch_size=100,
    optimizer=torch.optim.Adam,
    lr=1e-3,
    optimizer_options=None,
    scheduler=None,
    clip_norm=None,
    accelerator="auto",
    devices=1,
    strategy="auto",
    precision="32-true",
    compile=False,
    seed=0,
    valid_data=None,
    eval_every=1,
    eval_samples=100,
    ais_options=None,
    checkpoint=None,
    checkpoint_every=1,
    resume=False,
    overwrite=False,
    progress=True,
    validate_every_step=False,
):
    """Train a model/guide pair with an engine.

    :param model: a Pyro model, or an object with ``.model`` and ``.guide``
        (every family in :mod:`pplgen.models`). An engine that trains the model
        alone (``gan``) needs no guide and runs none.
    :param engine: an :class:`~pplgen.engine.Engine` or a registry name
        (``"svi"``, ``"iwae"``, ...; see :mod:`pplgen.inference`).
    :param data: a tensor ``(N, ...)``, a ``Dataset`` or a ``DataLoader``.
        Each batch is passed to model and guide as their arguments (a tuple
        batch is unpacked). A tuple is the programs' arguments themselves
        (e.g. ``(sigma, y)`` of eight schools), passed whole at every step:
        an epoch is one step.
    :param epochs, steps: how long to train (at least one of them; training
        stops at whichever comes first).
    :param batch_size: rows per step, over all processes together.
    :param lr: a learning rate or one per role, ``{"model", "guide", "helper"}``.
    :param scheduler: a callable ``optimizer -> LR scheduler``, stepped once per epoch.
    :param accelerator, devices, strategy: Lightning Fabric's: ``accelerator``
        ``"cpu"``, ``"cuda"``, ``"gpu"``, ``"mps"`` or ``"auto"`` (a GPU when
        there is one); ``devices`` a count or a list of device indices;
        ``strategy`` ``"auto"`` or ``"ddp"`` (others, FSDP and spawning ones
        included, are refused by name: they are not applied). With more
        than one device the script is run once per device (see
        :mod:`pplgen.distributed`); on CPU each process uses its share of the cores.
    :param precision: ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"`` (see :class:`Trainer`, which applies it).
    :param compile: compile the training step with ``torch.compile`` (see :class:`Trainer`).
    :param valid_data: held-out tensor, evaluated every ``eval_every`` epochs
        with ``eval_samples`` importance samples; for a guide with implicit
        sites (no density) by :func:`pplgen.evaluate.ais` instead, with
        ``ais_options`` (default ``{"num_steps": 100, "num_chains": 8}``), and
        without an ELBO. Each evaluation records its ``estimator``.
    :param checkpoint: a file path; written every ``checkpoint_every`` epochs and at the end.
    :param resume: continue from ``checkpoint`` when that file exists. The
        settings that shape the run (``lr``, ``seed``, ``batch_size``, the
        optimizer and its options, ``clip_norm``, ``precision``, the number of
        processes, the engine's options) must be those the checkpoint was
        written with: a changed one is refused by name
        (:class:`~pplgen.checkpoints.CheckpointError`), since the resumed run
        would no longer be the one the checkpoint continues.
    :param overwrite: replace an existing ``checkpoint`` file when not resuming
        (else an existing file is refused, so no run is lost by mistake).
    :param validate_every_step: see :class:`Trainer`.

    Each step updates every role with the engine's surrogate; whatever else
    an engine needs (avb's discriminator updates) happens inside its forward.
    ``fit`` seeds the random number generators with ``seed`` and leaves the
    caller's RNG states and thread count as it found them.
    """
    engine = resolve_engine(engine)
    model, guide = model_and_guide(model, guide, needs_guide=engine.needs_guide)
    _check_duration(epochs, steps)
    _check_checkpoint(checkpoint, resume, overwrite)
    fabric = _launch(accelerator, devices, strategy, precision)  # the Trainer applies the precision
    batches = (
        _WholeArguments(data, fabric.device)
        if isinstance(data, tuple)
        else _Batches(data, batch_size, seed, fabric.device)
    )
    batches.check_shardable(world_size())
    valid_data = (
        None if valid_data is None else _checked_tensor(valid_data, "valid_data", world_size()).to(fabric.device)
    )
    for module in owning_modules(model, guide):
        module.to(fabric.device)
    engine.to(fabric.device)

    pyro.set_rng_seed(seed)
    trainer = Trainer(
        model,
        guide,
        engine,
        optimizer=optimizer,
        lr=lr,
        optimizer_options=optimizer_options,
        clip_norm=clip_norm,
        validate_every_step=validate_every_step,
        precision=precision,
        compile=compile,
    )
    first = shard(batches.first(), rank(), world_size())
    try:
        probe = trainer.setup(*first)
    except ValueError:
        batches.explain_failure(model, first)
        raise
    batches.check_against(probe.model_trace, first)
    plates = _check_parallel(engine, probe, model, batches.first()) if world_size() > 1 else None
    if rank():
        pyro.set_rng_seed(_rank_seed(seed, rank()))
    schedule = scheduler(trainer.optimizer) if scheduler is not None else None
    result = FitResult(model, guide, engine, trainer, checkpoint=None if checkpoint is None else Path(checkpoint))
    settings = {
        "lr": trainer.learning_rates,
        "seed": seed,
        "batch_size": None if isinstance(batches, _WholeArguments) else batch_size,
        "optimizer": optimizer.__name__,
        "optimizer_options": trainer.optimizer_options,
        "clip_norm": clip_norm,
        "precision": precision,
        "processes": world_size(),
        "engine_options": engine.options(),
    }
    epoch, skip = _resume(result, schedule, settings) if resume and result.checkpoint.exists() else (0, 0)
    plan = _Plan(
        total_steps=min(
            steps if steps is not None else math.inf,
            epochs * len(batches) if epochs is not None else math.inf,
        ),
        settings=settings,
        valid_data=valid_data,
        eval_every=eval_every,
        eval_samples=eval_samples,
        ais_options=ais_options,
        checkpoint_every=checkpoint_every,
        progress=progress and rank() == 0,
        data_plates=plates,
    )
    _train(result, batches, schedule, plan, epoch, skip)
    return result


def _train(result, batches, schedule, plan, epoch, skip):
    """The steps from ``(epoch, skip)`` on, each epoch closed by :func:`_end_of_epoch`."""
    trainer = result.trainer
    num_epochs = math.ceil(plan.total_steps / len(batches))
    bar = tqdm(
        total=plan.total_steps, initial=trainer.num_steps, disable=not plan.progress, desc=f"fit {result.engine.name}"
    )
    try:
        while epoch < num_epochs and trainer.num_steps < plan.total_steps:
            batch_index = len(batches)
            for index, batch in enumerate(batches.epoch(epoch, skip), start=skip):
                if trainer.num_steps >= plan.total_steps:
                    batch_index = index
                    break
                metrics = _step(trainer, batch, plan.data_plates, result.checkpoint)
                result.history.append(
                    {"step": trainer.num_steps, "epoch": epoch, "batch_size": _batch_size(batch), **metrics}
                )
                bar.update()
                if trainer.num_steps % 10 == 0:
                    bar.set_postfix(loss=f"{metrics['loss'] / _batch_size(batch):.3f}")
            finished_epoch = batch_index >= len(batches)
            epoch, skip = (epoch + 1, 0) if finished_epoch else (epoch, batch_index)
            if finished_epoch:
                _end_of_epoch(result, schedule, plan, epoch, bar)
            last = trainer.num_steps >= plan.total_steps
            if result.checkpoint is not None and (last or (finished_epoch and epoch % plan.checkpoint_every == 0)):
                _save(result, schedule, epoch, skip, plan.settings)
    finally:
        bar.close()


def _step(trainer, batch, plates, checkpoint):
    """One step on this rank's shard of ``batch``, scaled so that the ranks' objectives sum to the batch's."""
    mine = shard(batch, rank(), world_size())
    scale = (
        ShardScale(plates, _batch_size(mine), _batch_size(batch), world_size()) if world_size() > 1 else nullcontext()
    )
    try:
        with scale:
            return trainer.step(*mine)
    except NonFiniteLossError as error:
        note = (
            f" The last checkpoint, {checkpoint}, is intact." if checkpoint is not None and checkpoint.exists() else ""
        )
        raise NonFiniteLossError(f"{error}{note}") from None


def _end_of_epoch(result, schedule, plan, epoch, bar):
    """The scheduler's step, and the held-out evaluation when one is due."""
    if schedule is not None:
        schedule.step()
    if plan.valid_data is None or epoch % plan.eval_every:
        return
    scores = held_out_scores(
        result.model, result.guide, plan.valid_data, plan.eval_samples, plan.ais_options, plan=result.engine.plan
    )
    if plan.progress and not result.evaluations:
        bar.write(f"held-out log-likelihood by {scores['estimator']}")
    result.evaluations.append({"epoch": epoch, "step": result.trainer.num_steps, **scores})


def _save(result, schedule, epoch, skip, settings):
    """Rank 0 writes the checkpoint, with every rank's RNG states; the others wait until it is written."""
    rng = [checkpoints.rng_state()]
    if world_size() > 1:
        rng = [None] * world_size()
        dist.all_gather_object(rng, checkpoints.rng_state())
    failure = None
    if rank() == 0:
        state = {
            "engine_name": result.engine.name,
            "settings": settings,
            "trainer": result.trainer.state_dict(),
            "scheduler": None if schedule is None else schedule.state_dict(),
            "rng": rng,
            "progress": {"epoch": epoch, "skip": skip},
            "history": result.history,
            "evaluations": result.evaluations,
        }
        try:
            checkpoints.write(result.checkpoint, state)
        except OSError as error:
            failure = error
    _raise_on_every_rank(failure, f"cannot write the checkpoint {result.checkpoint}")


def _raise_on_every_rank(failure, what):
    """Raise rank 0's ``failure`` (or nothing) on every rank, so no rank waits for one that stopped; the
    broadcast is also the barrier after rank 0's write."""
    message = [None if failure is None else f"{what}: {failure}"]
    if world_size() > 1:
        dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise OSError(message[0]) from failure


def _resume(result, schedule, settings):
    """Load the checkpoint into the run; returns ``(epoch, batches to skip)``."""
    state = checkpoints.read(result.checkpoint)
    checkpoints.check_resumable(result.checkpoint, state, result.engine.name, settings)
    try:
        result.trainer.load_state_dict(state["trainer"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise checkpoints.CheckpointError(
            f"{result.checkpoint} does not fit this model, guide and engine (another architecture or "
            f"options?): {str(error).rstrip('. ')}. Resume with the configuration that wrote it, or start a new checkpoint."
        ) from error
    if schedule is not None and state["scheduler"] is not None:
        schedule.load_state_dict(state["scheduler"])
    checkpoints.set_rng_state(state["rng"][rank()])
    result.history = state["history"]
    result.evaluations = state["evaluations"]
    return state["progress"]["epoch"], state["progress"]["skip"]


def _check_parallel(engine, probe, model, batch):
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


def _check_duration(epochs, steps):
    if epochs is None and steps is None:
        raise ValueError("give epochs=... or steps=... (how long to train)")
    for name, value in [("epochs", epochs), ("steps", steps)]:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_checkpoint(checkpoint, resume, overwrite):
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH to resume from")
    if checkpoint is not None and not resume and not overwrite and Path(checkpoint).exists():
        raise ValueError(
            f"{checkpoint} already exists: pass resume=True to continue that run or overwrite=True to replace it"
        )


#: Fabric strategies :func:`fit` runs: each process runs the script (Fabric's launcher, or torchrun), and
#: pplgen reduces gradients and engine statistics over the ranks itself (:mod:`pplgen.distributed`).
STRATEGIES = ("auto", "ddp")


def _launch(accelerator, devices, strategy, precision):
    """A launched Fabric for these options (one line naming the option when Fabric refuses them); on CPU
    with several processes, each process's share of the cores."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    if strategy not in STRATEGIES:
        raise ValueError(
            f"strategy={strategy!r} is not one fit runs: fit takes {' or '.join(map(repr, STRATEGIES))}, where each "
            "process runs the script itself and pplgen sums the gradients over the ranks (sharded or spawning "
            "strategies such as 'fsdp', 'deepspeed' or 'ddp_spawn' are neither applied nor tested); launch "
            "several processes with devices=N or torchrun."
        )
    # Imported here: importing lightning_fabric installs warning filters, which `import pplgen` should not.
    from lightning_fabric import Fabric

    try:
        fabric = Fabric(accelerator=accelerator, devices=devices, strategy=strategy)
    except (ValueError, RuntimeError, TypeError) as error:
        message = str(error).strip().splitlines()[0]
        raise ValueError(
            f"accelerator={accelerator!r}, devices={devices!r}, strategy={strategy!r} cannot run here: {message}"
        ) from None
    fabric.launch()
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    return fabric


def _rank_seed(seed, index):
    """Rank ``index``'s seed for particles: rank 0 keeps ``seed``, so a one-process run is rank 0's."""
    return (seed * 1_000_003 + index * 7_919) % 2**32


def _device_of(param_groups):
    return next(p.device for group in param_groups for p in group["params"])


def _batch_size(batch):
    first = batch[0]
    return len(first) if isinstance(first, torch.Tensor) and first.dim() else 1


class _WholeArguments:
    """The programs' arguments given as a tuple, passed whole at every step (one step per epoch)."""

    def __init__(self, arguments, device):
        self.arguments = tuple(
            _checked_tensor(a, f"data[{i}]").to(device) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(arguments)
        )

    def __len__(self):
        return 1

    def first(self):
        return self.arguments

    def check_shardable(self, processes):
        if processes > 1:
            raise ValueError(
                f"data given as the programs' arguments (a tuple) is passed whole at every step, so it cannot be "
                f"split over {processes} processes; fit it with devices=1, or pass a tensor of rows to shard."
            )

    def check_against(self, model_trace, first):
        _check_observations(model_trace, first, self.arguments)

    def explain_failure(self, model, first):
        _check_data(model, first, self.arguments)

    def epoch(self, epoch, skip):
        if skip == 0:
            yield self.arguments


class _Batches:
    """Mini-batches in a shuffle fixed by ``(seed, epoch)``, as argument tuples."""

    def __init__(self, data, batch_size, seed, device):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size, self.seed, self.device = batch_size, seed, device
        if isinstance(data, torch.Tensor):
            self.tensor = _checked_tensor(data, "data").to(device)
            self.source = None
        elif isinstance(data, (Dataset, DataLoader)):
            self.tensor = None
            self.source = data
        else:
            raise TypeError(
                f"data must be a torch.Tensor (N, ...), a torch Dataset or a DataLoader, got {type(data).__name__}; "
                "convert arrays with torch.as_tensor."
            )
        if len(self) == 0:
            raise ValueError("data is empty: it has no batch to train on")

    def __len__(self):
        if isinstance(self.source, DataLoader):
            return len(self.source)
        return math.ceil(len(self.source if self.tensor is None else self.tensor) / self.batch_size)

    def first(self):
        return next(iter(self.epoch(0, 0)))

    def check_shardable(self, processes):
        """Every batch has a row for each process, and every rank takes its shard of the same batch."""
        if processes == 1:
            return
        if isinstance(self.source, DataLoader):
            raise ValueError(
                f"a DataLoader cannot be split over {processes} processes: each would draw its own shuffle, so the "
                "ranks' shards would come from different batches. Pass the tensor or the Dataset itself: fit "
                "shuffles it by (seed, epoch) on every rank alike and gives each rank its shard."
            )
        size = len(self.source if self.tensor is None else self.tensor)
        smallest = min(self.batch_size, size % self.batch_size or self.batch_size)
        if smallest < processes:
            raise ValueError(
                f"a batch of {smallest} rows cannot be split over {processes} processes: choose a batch_size of at "
                f"least {processes} whose last batch (the data's size modulo batch_size) also has {processes} rows "
                "or none."
            )

    def check_against(self, model_trace, first):
        """The model observed the data in ``model_trace`` (its run on the ``first`` batch), and every row of
        the data lies in the support of the site observing it."""
        _check_observations(model_trace, first, self._whole(first))

    def explain_failure(self, model, first):
        """Raise what is wrong with the data when the pair fails on the ``first`` batch, if anything is."""
        _check_data(model, first, self._whole(first))

    def _whole(self, first):
        return (self.tensor,) + (None,) * (len(first) - 1)

    def epoch(self, epoch, skip):
        if isinstance(self.source, DataLoader):
            for i, batch in enumerate(self.source):
                if i >= skip:
                    yield self._to_device(batch)
            return
        order = self._order(epoch)
        starts = range(skip * self.batch_size, len(order), self.batch_size)
        if self.tensor is not None:
            order = order.to(self.device)
            for start in starts:
                yield (self.tensor[order[start : start + self.batch_size]],)
        else:
            loader = DataLoader(
                self.source,
                batch_size=self.batch_size,
                sampler=order[starts.start :].tolist(),
                generator=torch.Generator().manual_seed(self.seed),  # keeps the global RNG untouched
            )
            for batch in loader:
                yield self._to_device(batch)

    def _order(self, epoch):
        size = len(self.tensor if self.tensor is not None else self.source)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(size, generator=generator)

    def _to_device(self, batch):
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        return tuple(b.to(self.device) if isinstance(b, torch.Tensor) else b for b in batch)


def _check_data(model, first, whole):
    """What :func:`_check_observations` finds on a run of the model alone on the ``first`` batch, when the
    pair fails: from the prior and without Pyro's value checks (which stop at the batch's first bad value
    without naming its row), leaving the RNG untouched."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block(), pyro.validation_enabled(False), torch.no_grad():
        try:
            trace = poutine.trace(model).get_trace(*first)
        except (ValueError, RuntimeError, TypeError, IndexError, NotImplementedError) as error:
            raise ValueError(
                f"the model fails on the first batch of data: {error}{dtype_hint(error, first, {})}"
            ) from error
    _check_observations(trace, first, whole)


def _check_observations(trace, first, whole):
    """The model observes the data, and every value of the whole data lies in the support of the site
    observing it (``whole`` holds each argument's full data, or None where only batches are at hand)."""
    observations = [site for site in trace.nodes.values() if is_sample_site(site) and is_observation(site)]
    if not observations:
        raise ValueError(
            "the model observes no site (no obs=), so the data given to fit are never scored and the guide "
            "would only be fitted to the prior; observe the data in the model with pyro.sample(..., obs=...)."
        )
    for site in observations:
        for batch, data in zip(first, whole):
            if data is not None and _holds(batch, site["value"]):
                _check_support(site, data)


def _holds(argument, value):
    if not isinstance(argument, torch.Tensor) or argument.numel() != value.numel():
        return False
    return argument is value or torch.equal(argument.reshape(value.shape), value)


def _check_support(site, data):
    support = site["fn"].support
    while isinstance(support, constraints.independent):  # .to_event(...) keeps the elementwise support
        support = support.base_constraint
    if support.event_dim != 0 or support is constraints.real:
        return
    inside = support.check(data).reshape(len(data), -1).all(-1) if data.dim() else support.check(data)
    if inside.all():
        return
    row = (~inside).nonzero().flatten()[0].item()
    hint = (
        "binarize it, e.g. pplgen.data.load(..., binarize='threshold') or 'stochastic'"
        if support is constraints.boolean
        else "transform the data into that support, or observe it with a distribution whose support holds it"
    )
    raise ValueError(
        f"site '{site['name']}' observes the data with a {distribution_name(site['fn'])}, whose support is "
        f"{support}, but {int((~inside).sum())} rows of the data lie outside it, first at row {row}: {hint}."
    )


def _checked_tensor(data, name, processes=1):
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(data).__name__}; convert with torch.as_tensor")
    if data.dim() and len(data) == 0:
        raise ValueError(f"{name} is empty: it has no rows to train on")
    if processes > 1 and (not data.dim() or len(data) < processes):
        raise ValueError(f"{name} has fewer rows than the {processes} processes that share it")
    if data.is_floating_point():
        finite = torch.isfinite(data.reshape(len(data), -1)).all(-1) if data.dim() else torch.isfinite(data)
        if not finite.all():
            rows = (~finite).nonzero().flatten()
            raise ValueError(
                f"{name} has non-finite values (NaN or inf) in {len(rows)} rows, first at row {rows[0].item()}; "
                "remove or impute them before fitting."
            )
    return data


def _learning_rates(lr):
    if isinstance(lr, dict):
        unknown = set(lr) - set(ROLES)
        if unknown:
            raise ValueError(f"lr has unknown roles {sorted(unknown)}; roles are {ROLES}")
        return {role: _learning_rate(value, f"lr[{role!r}]") for role, value in lr.items()}
    return {role: _learning_rate(lr, "lr") for role in ROLES}


def _learning_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite positive number (or lr a dict by role {ROLES}), got {value!r}")
    return float(value)


def resolve_engine(engine):
    """An engine instance, or the registry's engine of that name."""
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str):
        return inference.get(engine)
    raise TypeError(f"engine must be a pplgen Engine or a registry name, got {type(engine).__name__}")
