"""Training a model/guide pair with any engine: :func:`fit` and its :class:`Trainer`.

::

    result = pplgen.fit(VAE(), "svi", x_train, epochs=10, valid_data=x_test)
    result.history[-1]["loss"], result.evaluations[-1]["log_likelihood"]

:class:`Trainer` owns one training step (engine → surrogate → backward →
clip → optimizer) and the optimizer's parameter groups, one per role;
:func:`fit` adds what surrounds the steps: batching, device placement,
seeding, evaluation, progress bar, history and checkpoints.

Reproducibility: the same seed gives the same loss history. Each epoch's
shuffle comes from a generator seeded with ``(seed, epoch)`` and the global
RNG states travel in every checkpoint, so ``resume=True`` continues exactly
as the uninterrupted run would. Checkpoints are written to a temporary file
and renamed, hold only tensors and plain Python values, and are read with
``torch.load(weights_only=True)``.
"""

import math
import pickle
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from torch.distributions import constraints
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pplgen import evaluate, inference
from pplgen.checks import distribution_name
from pplgen.engine import Engine
from pplgen.files import write_atomically
from pplgen.particles import is_observation, is_sample_site
from pplgen.probe import dtype_hint
from pplgen.programs import model_and_guide, owning_modules
from pplgen.roles import ROLES, parameter_roles

CHECKPOINT_FORMAT = "pplgen-checkpoint-2"
#: AIS settings of the held-out evaluations of implicit guides during :func:`fit`.
DEFAULT_AIS_OPTIONS = {"num_steps": 100, "num_chains": 8}


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

    Parameters are sorted into roles on the first step (see :mod:`pplgen.roles`).
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
    ):
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer class, got {optimizer!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
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
        self.optimizer = None
        self.roles = None
        self.store_params = {}
        self.num_steps = 0

    def setup(self, *args, **kwargs):
        """Check the pair, sort the parameters into roles and build the optimizer (once); returns the
        pair's probe (:mod:`pplgen.probe`), or None when already set up."""
        if self.optimizer is not None:
            return None
        probe = self.engine.check(self.model, self.guide, *args, **kwargs)
        self.roles = parameter_roles(probe, self.model, self.guide, self.engine)
        self.store_params = probe.store_params
        groups = [
            {"params": params, "role": role, **({"lr": self.learning_rates[role]} if role in self.learning_rates else {})}
            for role, params in self.roles.items()
            if params
        ]
        if not groups:
            raise ValueError("the model, guide and engine have no parameters to train")
        self.optimizer = self.optimizer_class(groups, **self.optimizer_options)
        return probe

    def step(self, *args, **kwargs):
        """One update; returns the engine's metrics as floats."""
        self.setup(*args, **kwargs)
        checks = nullcontext() if self.validate_every_step or self.num_steps == 0 else pyro.validation_enabled(False)
        with checks:
            loss = self.engine(self.model, self.guide, *args, **kwargs)
        self.num_steps += 1
        metrics = {name: value.item() for name, value in loss.metrics.items()}
        if not math.isfinite(loss.surrogate.item()):
            raise NonFiniteLossError(self._non_finite_message(loss))
        self._update(loss.surrogate)
        return metrics

    def _update(self, surrogate):
        """One optimizer step along ``-∇ surrogate``; parameters it does not reach keep no gradient and stay put.

        Raises :class:`NonFiniteLossError` naming the parameter when the step made one non-finite.
        """
        self.optimizer.zero_grad(set_to_none=True)
        surrogate.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        self.optimizer.step()
        if not torch.isfinite(torch.nn.utils.get_total_norm(params, norm_type=math.inf)):
            raise NonFiniteLossError(self._non_finite_parameter_message())

    def _non_finite_parameter_message(self):
        role, index = next(
            (group["role"], i)
            for group in self.optimizer.param_groups
            for i, p in enumerate(group["params"])
            if not torch.isfinite(p).all()
        )
        rates = {group["role"]: group["lr"] for group in self.optimizer.param_groups}
        return (
            f"step {self.num_steps}: engine '{self.engine.name}' made {role} parameter {index} non-finite (NaN or "
            f"inf) with learning rates {rates}; training stopped. Lower the learning rate or clip gradients "
            "(clip_norm=...)."
        )

    def _non_finite_message(self, loss):
        bad = [name for name, value in loss.metrics.items() if not torch.isfinite(value).all()]
        culprit = f"metric '{bad[0]}' = {loss.metrics[bad[0]].item()}" if bad else "the surrogate"
        return (
            f"step {self.num_steps}: engine '{self.engine.name}' produced a non-finite loss "
            f"({culprit}); training stopped before updating any parameter. Lower the learning "
            "rate, clip gradients (clip_norm=...), or check the data and the model's scales."
        )

    def state_dict(self):
        modules = dict(zip(("model", "guide"), owning_modules(self.model, self.guide)))
        return {
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "param_store": {name: p.detach().clone() for name, p in self.store_params.items()},
            "engine": self.engine.state_dict(),
            "optimizer": self.optimizer.state_dict(),
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
        self.num_steps = state["num_steps"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history`` has one dict per step (``step``, ``epoch``, ``batch_size`` and
    the engine's metrics, batch totals); ``evaluations`` one dict per
    evaluation (``epoch``, ``step``, mean per-datum ``log_likelihood`` and
    ``elbo`` on ``valid_data``, and the ``estimator`` of the log-likelihood).
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
        return [row[name] / row["batch_size"] if name in ("loss", "elbo", "bound") else row[name] for row in self.history]


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
    device="auto",
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
        (every family in :mod:`pplgen.models`).
    :param engine: an :class:`~pplgen.engine.Engine` or a registry name
        (``"svi"``, ``"iwae"``, ...; see :mod:`pplgen.inference`).
    :param data: a tensor ``(N, ...)``, a ``Dataset`` or a ``DataLoader``.
        Each batch is passed to model and guide as their arguments (a tuple
        batch is unpacked). A tuple is the programs' arguments themselves
        (e.g. ``(sigma, y)`` of eight schools), passed whole at every step:
        an epoch is one step.
    :param epochs, steps: how long to train (at least one of them; training
        stops at whichever comes first).
    :param lr: a learning rate or one per role, ``{"model", "guide", "helper"}``.
    :param scheduler: a callable ``optimizer -> LR scheduler``, stepped once per epoch.
    :param device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a ``torch.device``.
    :param valid_data: held-out tensor, evaluated every ``eval_every`` epochs
        with ``eval_samples`` importance samples; for a guide with implicit
        sites (no density) by :func:`pplgen.evaluate.ais` instead, with
        ``ais_options`` (default ``{"num_steps": 100, "num_chains": 8}``), and
        without an ELBO. Each evaluation records its ``estimator``.
    :param checkpoint: a file path; written every ``checkpoint_every`` epochs and at the end.
    :param resume: continue from ``checkpoint`` when that file exists. The
        settings that shape the run (``lr``, ``seed``, ``batch_size``, the
        optimizer and its options, ``clip_norm``, the engine's options) must be
        those the checkpoint was written with: a changed one is refused by name
        (:class:`CheckpointError`), since the resumed run would no longer be
        the one the checkpoint continues.
    :param overwrite: replace an existing ``checkpoint`` file when not resuming
        (else an existing file is refused, so no run is lost by mistake).
    :param validate_every_step: see :class:`Trainer`.

    Each step updates every role with the engine's surrogate; whatever else
    an engine needs (avb's discriminator updates) happens inside its forward.
    """
    model, guide = model_and_guide(model, guide)
    engine = resolve_engine(engine)
    if epochs is None and steps is None:
        raise ValueError("give epochs=... or steps=... (how long to train)")
    for name, value in [("epochs", epochs), ("steps", steps)]:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH to resume from")
    if checkpoint is not None and not resume and not overwrite and Path(checkpoint).exists():
        raise ValueError(
            f"{checkpoint} already exists: pass resume=True to continue that run or overwrite=True to replace it"
        )
    device = _resolve_device(device)
    batches = _WholeArguments(data, device) if isinstance(data, tuple) else _Batches(data, batch_size, seed, device)
    valid_data = None if valid_data is None else _checked_tensor(valid_data, "valid_data").to(device)
    for module in owning_modules(model, guide):
        module.to(device)
    engine.to(device)

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
    )
    batches.check_against(model)
    trainer.setup(*batches.first())
    schedule = scheduler(trainer.optimizer) if scheduler is not None else None
    result = FitResult(model, guide, engine, trainer, checkpoint=None if checkpoint is None else Path(checkpoint))
    settings = {
        "lr": trainer.learning_rates,
        "seed": seed,
        "batch_size": None if isinstance(batches, _WholeArguments) else batch_size,
        "optimizer": optimizer.__name__,
        "optimizer_options": trainer.optimizer_options,
        "clip_norm": clip_norm,
        "engine_options": engine.options(),
    }
    epoch, skip = 0, 0
    if resume and result.checkpoint.exists():
        epoch, skip = _load_checkpoint(result, schedule, settings)

    total = min(
        steps if steps is not None else math.inf,
        epochs * len(batches) if epochs is not None else math.inf,
    )
    num_epochs = math.ceil(total / len(batches))
    bar = tqdm(total=total, initial=trainer.num_steps, disable=not progress, desc=f"fit {engine.name}")
    try:
        while epoch < num_epochs and trainer.num_steps < total:
            for batch_index, batch in enumerate(batches.epoch(epoch, skip), start=skip):
                if trainer.num_steps >= total:
                    break
                metrics = _step(trainer, batch, result.checkpoint)
                result.history.append({"step": trainer.num_steps, "epoch": epoch, "batch_size": _batch_size(batch), **metrics})
                bar.update()
                if trainer.num_steps % 10 == 0:
                    bar.set_postfix(loss=f"{metrics['loss'] / _batch_size(batch):.3f}")
            else:
                batch_index = len(batches)
            finished_epoch = batch_index >= len(batches)
            if finished_epoch:
                epoch, skip = epoch + 1, 0
                if schedule is not None:
                    schedule.step()
                if valid_data is not None and epoch % eval_every == 0:
                    evaluation = _evaluate(model, guide, valid_data, eval_samples, ais_options, epoch, trainer.num_steps)
                    if progress and not result.evaluations:
                        bar.write(f"held-out log-likelihood by {evaluation['estimator']}")
                    result.evaluations.append(evaluation)
            else:
                skip = batch_index
            last = trainer.num_steps >= total
            if result.checkpoint is not None and (last or (finished_epoch and epoch % checkpoint_every == 0)):
                _save_checkpoint(result, schedule, epoch, skip, settings)
    finally:
        bar.close()
    return result


def _step(trainer, batch, checkpoint):
    try:
        return trainer.step(*batch)
    except NonFiniteLossError as error:
        note = f" The last checkpoint, {checkpoint}, is intact." if checkpoint is not None and checkpoint.exists() else ""
        raise NonFiniteLossError(f"{error}{note}") from None


def _evaluate(model, guide, data, num_samples, ais_options, epoch, step):
    return {"epoch": epoch, "step": step, **held_out_scores(model, guide, data, num_samples, ais_options)}


def held_out_scores(model, guide, data, num_samples, ais_options=None):
    """Mean per-datum ``log_likelihood`` and ``elbo`` of ``data``, and the ``estimator`` used.

    Importance sampling with ``num_samples`` particles; for a guide with
    implicit sites, AIS with ``ais_options`` and no ELBO.
    """
    implicit = evaluate.implicit_sites(guide, data[:1])
    if implicit:
        options = {**DEFAULT_AIS_OPTIONS, **(ais_options or {})}
        return {
            "log_likelihood": evaluate.ais(model, data, **options).mean().item(),
            "elbo": None,
            "estimator": (
                f"ais ({options['num_steps']} steps, {options['num_chains']} chains): guide site "
                f"'{implicit[0]}' is implicit, with no density to importance-sample"
            ),
        }
    return {
        "log_likelihood": evaluate.log_likelihood(model, data, guide=guide, num_samples=num_samples).mean().item(),
        "elbo": evaluate.elbo(model, data, guide=guide).mean().item(),
        "estimator": f"importance sampling (K={num_samples})",
    }


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

    def check_against(self, model):
        _check_data(model, self.arguments, self.arguments)

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

    def check_against(self, model):
        first = self.first()
        _check_data(model, first, (self.tensor,) + (None,) * (len(first) - 1))

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
    """The model observes the data, and every value of the whole data lies in the support of the site
    observing it (``whole`` holds each argument's full data, or None where only batches are at hand).

    Runs the model once on the ``first`` batch, from its prior and without Pyro's value checks (which
    would stop at the batch's first bad value without naming its row), leaving the RNG untouched.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block(), pyro.validation_enabled(False), torch.no_grad():
        try:
            trace = poutine.trace(model).get_trace(*first)
        except (ValueError, RuntimeError, TypeError, IndexError, NotImplementedError) as error:
            raise ValueError(f"the model fails on the first batch of data: {error}{dtype_hint(error, first, {})}") from error
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


def _checked_tensor(data, name):
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(data).__name__}; convert with torch.as_tensor")
    if data.dim() and len(data) == 0:
        raise ValueError(f"{name} is empty: it has no rows to train on")
    if data.is_floating_point():
        finite = torch.isfinite(data.reshape(len(data), -1)).all(-1) if data.dim() else torch.isfinite(data)
        if not finite.all():
            rows = (~finite).nonzero().flatten()
            raise ValueError(
                f"{name} has non-finite values (NaN or inf) in {len(rows)} rows, first at row {rows[0].item()}; "
                "remove or impute them before fitting."
            )
    return data


def _batch_size(batch):
    first = batch[0]
    return len(first) if isinstance(first, torch.Tensor) and first.dim() else 1


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


def _resolve_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device: use 'cpu', 'cuda', 'cuda:1' or 'auto' ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available here; use device='cpu' or 'auto'")
    return device


def _rng_state():
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "position": int(np_state[2])},
    }


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["position"]))


def _save_checkpoint(result, schedule, epoch, skip, settings):
    state = {
        "format": CHECKPOINT_FORMAT,
        "engine_name": result.engine.name,
        "settings": settings,
        "trainer": result.trainer.state_dict(),
        "scheduler": None if schedule is None else schedule.state_dict(),
        "rng": _rng_state(),
        "progress": {"epoch": epoch, "skip": skip},
        "history": result.history,
        "evaluations": result.evaluations,
    }
    result.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(result.checkpoint, lambda temporary: torch.save(state, temporary))


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, foreign, or written by another configuration."""


def _read_checkpoint(path):
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
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pplgen checkpoint (format {CHECKPOINT_FORMAT}); start a new run.")
    return state


def _load_checkpoint(result, schedule, settings):
    state = _read_checkpoint(result.checkpoint)
    if state["engine_name"] != result.engine.name:
        raise CheckpointError(
            f"{result.checkpoint} was written by engine '{state['engine_name']}', not '{result.engine.name}'; "
            "resume with the same engine or start a new checkpoint."
        )
    changed = {k: (state["settings"].get(k), v) for k, v in settings.items() if state["settings"].get(k) != v}
    if changed:
        described = "; ".join(f"{k} was {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise CheckpointError(
            f"{result.checkpoint} was trained with other settings ({described}); an exact resume needs the same "
            "ones: resume with the settings that wrote it, or start a new run."
        )
    try:
        result.trainer.load_state_dict(state["trainer"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{result.checkpoint} does not fit this model, guide and engine (another architecture or "
            f"options?): {str(error).rstrip('. ')}. Resume with the configuration that wrote it, or start a new checkpoint."
        ) from error
    if schedule is not None and state["scheduler"] is not None:
        schedule.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    result.history = state["history"]
    result.evaluations = state["evaluations"]
    return state["progress"]["epoch"], state["progress"]["skip"]
