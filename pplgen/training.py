"""Training a model/guide pair with any engine: :func:`fit`.

::

    result = pplgen.fit(VAE(), "svi", x_train, epochs=10, evaluation=x_test)
    result.history[-1]["loss"], result.evaluations[-1]["log_likelihood"]

:func:`fit` runs :class:`~pplgen.step.TrainingStep` in a loop and adds what
surrounds the steps: processes (:mod:`pplgen.launching`), batches
(:mod:`pplgen.batches`), seeding, held-out evaluation, a progress bar, the
history and checkpoints (:mod:`pplgen.checkpoints`). What it is asked to do
beyond the data and the duration comes in four option groups
(:mod:`pplgen.options`).

Reproducibility: the same seed gives the same loss history. Each epoch's
shuffle comes from a generator seeded with ``(seed, epoch)`` and every rank's
RNG states travel in every checkpoint, so ``resume=True`` continues exactly
as the uninterrupted run would.
"""

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pplgen import checkpoints, inference
from pplgen.batches import WholeArguments, batches_for, check_held_out, checked_tensor, data_fingerprint, rows_in
from pplgen.distributed import ShardScale, lost_peer, rank, shard, world_size
from pplgen.engine import Engine
from pplgen.evaluate import held_out_scores
from pplgen.launching import check_parallel, launch, rank_seed
from pplgen.loggers import MetricsLog
from pplgen.memory import check_particle_memory, out_of_memory
from pplgen.options import Checkpointing, Evaluation, Execution, Logger, Logging, Optimization, as_options
from pplgen.programs import model_and_guide, owning_modules
from pplgen.step import NonFiniteLossError, TrainingStep


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history`` has one dict per step (``step``, ``epoch``, ``batch_size`` and
    the engine's metrics, batch totals); ``evaluations`` one dict per
    evaluation (``epoch``, ``step``, mean per-datum ``log_likelihood`` and
    ``elbo`` on the held-out data, and the ``estimator`` of the log-likelihood).
    In a multi-process run every rank returns the same result.
    """

    model: object
    guide: object
    engine: Engine
    training_step: TrainingStep
    history: list = field(default_factory=list)
    evaluations: list = field(default_factory=list)
    checkpoint: Path | None = None

    def metric(self, name):
        """One metric over the steps, per datum when it is a batch total."""
        return [
            row[name] / row["batch_size"] if name in ("loss", "elbo", "bound") else row[name] for row in self.history
        ]


@dataclass
class _Run:
    """What :func:`fit` was asked to do around the steps."""

    total_steps: float
    settings: dict
    valid_data: torch.Tensor | None
    evaluation: Evaluation | None
    checkpoint_every: int | None
    hide_progress: bool | None  # tqdm's disable: None hides the bar off a terminal
    data_plates: frozenset | None
    log: MetricsLog


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
    model: Callable | torch.nn.Module,
    engine: Engine | str = "svi",
    data: torch.Tensor | Dataset | DataLoader | tuple | None = None,
    *,
    guide: Callable | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    optimization: Optimization | Mapping | None = None,
    execution: Execution | Mapping | None = None,
    evaluation: Evaluation | Mapping | torch.Tensor | None = None,
    checkpoint: Checkpointing | Mapping | str | Path | None = None,
    loggers: Logging | Mapping | Logger | Sequence[Logger] | None = None,
) -> FitResult:
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
    :param seed: seeds the shuffles and the random number generators.
    :param optimization: an :class:`~pplgen.options.Optimization` (optimizer,
        learning rates, scheduler, clipping) or a dict of its options.
    :param execution: an :class:`~pplgen.options.Execution` (accelerator,
        devices, nodes, strategy, precision, compile, progress bar) or a dict.
    :param evaluation: an :class:`~pplgen.options.Evaluation`, a dict, or the
        held-out tensor alone: the mean per-datum importance-sampled
        ``log_likelihood`` and ``elbo`` after every ``every`` epochs (for a
        guide with implicit sites, :func:`pplgen.evaluate.ais` and no ELBO).
        Each evaluation records its ``estimator``.
    :param checkpoint: a :class:`~pplgen.options.Checkpointing`, a dict, or
        the file's path alone: written every ``every`` epochs and at the end;
        an existing file is refused unless ``resume`` or ``overwrite``.
    :param loggers: Lightning Fabric loggers (``TensorBoardLogger``, ``CSVLogger``), one or a list, or a
        :class:`~pplgen.options.Logging` (the loggers and how often steps are logged) or a dict of its options:
        they get the run's settings, the step metrics and the evaluations (:mod:`pplgen.loggers`).

    Each step updates every role with the engine's surrogate; whatever else
    an engine needs (avb's discriminator updates) happens inside its forward.
    ``fit`` seeds the random number generators with ``seed`` and leaves the
    caller's RNG states and thread count as it found them.
    """
    engine = resolve_engine(engine)
    model, guide = model_and_guide(model, guide, needs_guide=engine.needs_guide)
    _check_duration(epochs, steps)
    optimization = as_options(Optimization, optimization, "optimization") or Optimization()
    execution = as_options(Execution, execution, "execution") or Execution()
    evaluation = as_options(Evaluation, evaluation, "evaluation", (torch.Tensor,))
    checkpoint = as_options(Checkpointing, checkpoint, "checkpoint", (str, Path))
    logging = as_options(Logging, loggers, "loggers", (Logger, list, tuple))
    fabric = launch(execution)
    batches = batches_for(data, batch_size, seed, fabric.device)
    batches.check_shardable(world_size())
    valid_data = (
        None
        if evaluation is None
        else checked_tensor(evaluation.data, "evaluation data", world_size()).to(fabric.device)
    )
    for module in owning_modules(model, guide):
        module.to(fabric.device)
    engine.to(fabric.device)

    pyro.set_rng_seed(seed)
    training_step = TrainingStep(
        model,
        guide,
        engine,
        optimizer=optimization.optimizer,
        lr=optimization.lr,
        optimizer_options=optimization.options,
        clip_norm=optimization.clip_norm,
        validate_every_step=optimization.validate_every_step,
        precision=execution.precision,
        compile=execution.compile,
    )
    first = shard(batches.first(), rank(), world_size())
    try:
        probe = training_step.setup(*first)
    except ValueError:
        batches.explain_failure(model, first)
        raise
    batches.check_against(probe.model_trace, first)
    check_particle_memory(probe, getattr(engine, "num_particles", 1), fabric.device, engine.name)
    if valid_data is not None:
        check_held_out(model, valid_data)
    plates = check_parallel(engine, probe, model, batches.first()) if world_size() > 1 else None
    if rank():
        pyro.set_rng_seed(rank_seed(seed, rank()))
    schedule = optimization.scheduler(training_step.optimizer) if optimization.scheduler is not None else None
    result = FitResult(model, guide, engine, training_step, checkpoint=None if checkpoint is None else checkpoint.path)
    settings = {
        "lr": training_step.learning_rates,
        "seed": seed,
        "batch_size": None if isinstance(batches, WholeArguments) else batch_size,
        "optimizer": optimization.optimizer.__name__,
        "optimizer_options": training_step.optimizer_options,
        "clip_norm": optimization.clip_norm,
        "precision": execution.precision,
        "processes": world_size(),
        "engine_options": engine.options(),
        "data": data_fingerprint(data),
        **(dict(checkpoint.settings or {}) if checkpoint is not None else {}),
    }
    resuming = checkpoint is not None and checkpoint.resume and checkpoint.path.exists()
    epoch, skip, loader = checkpoints.resume(result, schedule, settings) if resuming else (0, 0, None)
    batches.load_loader_state(loader)
    run = _Run(
        total_steps=min(
            steps if steps is not None else math.inf,
            epochs * len(batches) if epochs is not None else math.inf,
        ),
        settings=settings,
        valid_data=valid_data,
        evaluation=evaluation,
        checkpoint_every=None if checkpoint is None else checkpoint.every,
        hide_progress=True if rank() else None if execution.progress is None else not execution.progress,
        data_plates=plates,
        log=MetricsLog(logging),
    )
    if resuming:
        _check_left_to_train(checkpoint.path, training_step.num_steps, run.total_steps, steps, epochs)
    run.log.settings(settings)
    _train(result, batches, schedule, run, epoch, skip)
    return result


def _check_left_to_train(path, done, total, steps, epochs):
    """A resume asks for no fewer steps than its checkpoint has trained (``steps`` and ``epochs`` count the run's
    total); one asking for exactly those trains nothing and finishes the run (its evaluation, its files)."""
    if done <= total:
        return
    asked = " and ".join(f"{name}={value}" for name, value in (("steps", steps), ("epochs", epochs)) if value)
    raise checkpoints.CheckpointError(
        f"{path} has trained {done} steps and {asked} ask for {total} in all (they count the whole run, not "
        f"the steps to add); nothing was changed. Ask for more than {done} steps to continue the run."
    )


def _train(result, batches, schedule, run, epoch, skip):
    """The steps from ``(epoch, skip)`` on, each epoch closed by :func:`_end_of_epoch`."""
    training_step = result.training_step
    num_epochs = math.ceil(run.total_steps / len(batches))
    bar = tqdm(
        total=run.total_steps,
        initial=training_step.num_steps,
        disable=run.hide_progress,
        desc=f"fit {result.engine.name}",
    )
    try:
        while epoch < num_epochs and training_step.num_steps < run.total_steps:
            batch_index = len(batches)
            for index, batch in enumerate(batches.epoch(epoch, skip), start=skip):
                if training_step.num_steps >= run.total_steps:
                    batch_index = index
                    break
                metrics = _step(training_step, batch, run.data_plates, result.checkpoint)
                result.history.append(
                    {"step": training_step.num_steps, "epoch": epoch, "batch_size": rows_in(batch), **metrics}
                )
                run.log.step(training_step.num_steps, metrics)
                bar.update()
                if training_step.num_steps % 10 == 0:
                    bar.set_postfix(loss=f"{metrics['loss'] / rows_in(batch):.3f}")
            finished_epoch = batch_index >= len(batches)
            epoch, skip = (epoch + 1, 0) if finished_epoch else (epoch, batch_index)
            if finished_epoch:
                _end_of_epoch(result, schedule, run, epoch, bar)
            last = training_step.num_steps >= run.total_steps
            if result.checkpoint is not None and (last or (finished_epoch and epoch % run.checkpoint_every == 0)):
                checkpoints.save(result, schedule, epoch, skip, run.settings, batches.loader_state())
    except BaseException:
        run.log.finish("failed")
        raise
    else:
        run.log.finish("success")
    finally:
        bar.close()


def _step(training_step, batch, plates, checkpoint):
    """One step on this rank's shard of ``batch``, scaled so that the ranks' objectives sum to the batch's."""
    mine = shard(batch, rank(), world_size())
    scale = ShardScale(plates, rows_in(mine), rows_in(batch), world_size()) if world_size() > 1 else nullcontext()
    try:
        with scale:
            return training_step.step(*mine)
    except RuntimeError as error:
        if world_size() > 1 and lost_peer(error):
            raise ValueError(_lost_process(training_step.num_steps + 1, checkpoint)) from None
        if not out_of_memory(error):
            raise
        raise ValueError(
            f"step {training_step.num_steps + 1} could not get its memory ({str(error).strip().splitlines()[0]}); "
            "use fewer particles or a smaller batch"
        ) from None
    except NonFiniteLossError as error:
        note = (
            f" The last checkpoint, {checkpoint}, is intact." if checkpoint is not None and checkpoint.exists() else ""
        )
        raise NonFiniteLossError(f"{error}{note}") from None


def _lost_process(step, checkpoint):
    """One line for a run that lost a process (killed, or its machine gone) at ``step``."""
    lost = f"rank {1 - rank()}" if world_size() == 2 else "another rank"
    where = (
        f"; the last checkpoint is {checkpoint}: resume from it"
        if checkpoint is not None and checkpoint.exists()
        else "; no checkpoint was written yet"
    )
    return f"{lost} of this {world_size()}-process run stopped during step {step}, so rank {rank()} stopped too{where}"


def _end_of_epoch(result, schedule, run, epoch, bar):
    """The scheduler's step, and the held-out evaluation when one is due."""
    if schedule is not None:
        schedule.step()
    if run.valid_data is None or epoch % run.evaluation.every:
        return
    scores = held_out_scores(
        result.model,
        result.guide,
        run.valid_data,
        run.evaluation.samples,
        run.evaluation.ais_options,
        plan=result.engine.plan,
    )
    if not bar.disable and not result.evaluations:
        bar.write(f"held-out log-likelihood by {scores['estimator']}")
    result.evaluations.append({"epoch": epoch, "step": result.training_step.num_steps, **scores})
    run.log.evaluation(result.training_step.num_steps, scores)


def _check_duration(epochs, steps):
    if epochs is None and steps is None:
        raise ValueError("give epochs=... or steps=... (how long to train)")
    for name, value in [("epochs", epochs), ("steps", steps)]:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def resolve_engine(engine: Engine | str) -> Engine:
    """An engine instance, or the registry's engine of that name."""
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str):
        return inference.get(engine)
    raise TypeError(f"engine must be a pplgen Engine or a registry name, got {type(engine).__name__}")
