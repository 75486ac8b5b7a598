"""The option groups of :func:`pplgen.fit`: how to optimize, where to run, what to evaluate, where to checkpoint.

::

    pplgen.fit(
        VAE(), "iwae", x_train, epochs=10,
        optimization=Optimization(lr=3e-4, clip_norm=10.0),
        execution=Execution(devices=2, precision="bf16-mixed"),
        evaluation=Evaluation(x_test, samples=1000),
        checkpoint=Checkpointing("runs/vae/checkpoint.pt", resume=True),
    )

Each group is a frozen dataclass that checks its values when built, so a
wrong one is refused before anything runs. :func:`pplgen.fit` also takes a
dict of a group's fields (``optimization={"lr": 3e-4}``), the held-out
tensor alone for ``evaluation`` and a path alone for ``checkpoint``.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from pplgen.roles import ROLES

#: The ``precision`` values :class:`Execution` takes (Lightning Fabric's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")

#: The values of ``compile``: eager, the engine's forward under ``torch.compile``, or the traced step
#: (:mod:`pplgen.traced`).
COMPILE = (False, True, "trace")

#: Fabric strategies :func:`pplgen.fit` runs: each process runs the script (Fabric's launcher, or torchrun), and
#: pplgen reduces gradients and engine statistics over the ranks itself (:mod:`pplgen.distributed`).
STRATEGIES = ("auto", "ddp")


@dataclass(frozen=True)
class Optimization:
    """How each step updates the parameters (see :class:`pplgen.step.TrainingStep`).

    :param optimizer: a ``torch.optim.Optimizer`` subclass.
    :param lr: a learning rate, or one per role ``{"model": ..., "guide": ..., "helper": ...}``
        (roles left out get the optimizer's default).
    :param options: further keyword arguments for the optimizer.
    :param scheduler: a callable ``optimizer -> LR scheduler``, stepped once per epoch.
    :param clip_norm: clip the gradient's total norm to this value.
    :param validate_every_step: keep Pyro's distribution checks after the first step (see
        :class:`pplgen.step.TrainingStep`).
    """

    optimizer: type = torch.optim.Adam
    lr: float | Mapping = 1e-3
    options: Mapping | None = None
    scheduler: Callable | None = None
    clip_norm: float | None = None
    validate_every_step: bool = False

    def __post_init__(self):
        if not (isinstance(self.optimizer, type) and issubclass(self.optimizer, torch.optim.Optimizer)):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer class, got {self.optimizer!r}")
        learning_rates(self.lr)
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm!r}")
        if self.scheduler is not None and not callable(self.scheduler):
            raise TypeError(f"scheduler must be a callable optimizer -> LR scheduler, got {self.scheduler!r}")


@dataclass(frozen=True)
class Execution:
    """Where and how the steps run: Lightning Fabric's device options, numerics and compilation.

    :param accelerator: ``"cpu"``, ``"cuda"``, ``"gpu"``, ``"mps"`` or ``"auto"`` (a GPU when there is one).
    :param devices: processes per node: a count or a list of device indices. With more than one the script
        is run once per device (see :mod:`pplgen.distributed`); on CPU each process takes its share of the cores.
    :param num_nodes: machines taking part; with ``num_nodes > 1`` start the script on every node with
        ``torchrun`` (or under SLURM), which Fabric detects.
    :param strategy: ``"auto"`` or ``"ddp"``; others (FSDP and spawning ones included) are refused by
        name, since they are not applied.
    :param precision: ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"`` (see :class:`pplgen.step.TrainingStep`).
    :param compile: ``"trace"``: replay each step's forward and backward as one traced, compiled graph
        (:mod:`pplgen.traced`); ``True``: compile the engine's forward with ``torch.compile``.
    :param progress: show a progress bar; ``None`` (default) shows it only on a terminal.
    """

    accelerator: str = "auto"
    devices: int | list | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    compile: bool | str = False
    progress: bool | None = None

    def __post_init__(self):
        check_precision(self.precision)
        check_compile(self.compile, self.precision)
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy={self.strategy!r} is not one fit runs: fit takes {' or '.join(map(repr, STRATEGIES))}, "
                "where each process runs the script itself and pplgen sums the gradients over the ranks (sharded "
                "or spawning strategies such as 'fsdp', 'deepspeed' or 'ddp_spawn' are neither applied nor "
                "tested); launch several processes with devices=N or torchrun."
            )
        _check_positive_int(self.num_nodes, "num_nodes")


@dataclass(frozen=True)
class Evaluation:
    """A held-out evaluation every ``every`` epochs (see :func:`pplgen.evaluate.held_out_scores`).

    :param data: the held-out tensor ``(N, ...)``.
    :param every: evaluate after every ``every``-th epoch.
    :param samples: importance samples per datum.
    :param ais_options: for a guide with implicit sites (no density), the options of
        :func:`pplgen.evaluate.ais` (default ``{"num_steps": 100, "num_chains": 8}``).
    """

    data: torch.Tensor
    every: int = 1
    samples: int = 100
    ais_options: Mapping | None = None

    def __post_init__(self):
        if not isinstance(self.data, torch.Tensor):
            raise TypeError(
                f"evaluation data must be a torch.Tensor, got {type(self.data).__name__}; convert with torch.as_tensor"
            )
        _check_positive_int(self.every, "evaluation every")
        _check_positive_int(self.samples, "evaluation samples")


@dataclass(frozen=True)
class Checkpointing:
    """A checkpoint file, written every ``every`` epochs and at the end (see :mod:`pplgen.checkpoints`).

    :param path: the checkpoint file.
    :param every: write after every ``every``-th epoch.
    :param resume: continue from ``path`` when that file exists. The settings that shape the run (learning
        rates, seed, batch size, the optimizer and its options, clipping, precision, the number of processes,
        the engine's options, the data) must be those it was written with: a changed one is refused by name.
        ``steps`` and ``epochs`` count the whole run, so a resume asking for fewer steps than the checkpoint
        has trained is refused too.
    :param overwrite: replace an existing file when not resuming (else an existing file is refused, so no
        run is lost by mistake).
    :param settings: more settings a resume must match, by the names a refusal should give them (the command
        line passes its model options and data source, e.g. ``{"--hidden": 400, "--split-train": "train"}``).
        The training data themselves are always among the settings: their size, shape, dtype and a hash of
        their contents.
    """

    path: str | Path
    every: int = 1
    resume: bool = False
    overwrite: bool = False
    settings: Mapping | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        _check_positive_int(self.every, "checkpoint every")
        if not self.resume and not self.overwrite and self.path.exists():
            raise ValueError(
                f"{self.path} already exists: pass resume=True to continue that run or overwrite=True to replace it"
            )


@runtime_checkable
class Logger(Protocol):
    """What a logger of :class:`Logging` is: Lightning Fabric's ``Logger`` interface (``TensorBoardLogger``,
    ``CSVLogger``, Lightning's own loggers), which any object with these methods meets."""

    def log_hyperparams(self, params): ...

    def log_metrics(self, metrics, step=None): ...

    def finalize(self, status): ...


@dataclass(frozen=True)
class Logging:
    """Lightning Fabric loggers that get the run's settings, its step metrics and its evaluations (see
    :mod:`pplgen.loggers`), from the first process only.

    :param loggers: a :class:`Logger` (``lightning_fabric.loggers.TensorBoardLogger``, ``CSVLogger``, ...) or a
        sequence of them.
    :param every: log the step metrics of every ``every``-th step (the settings and evaluations always).
    """

    loggers: Logger | Sequence[Logger] = ()
    every: int = 1

    def __post_init__(self):
        loggers = (self.loggers,) if isinstance(self.loggers, Logger) else tuple(self.loggers)
        for logger in loggers:
            if not isinstance(logger, Logger):
                raise TypeError(
                    "loggers must be Lightning Fabric loggers (TensorBoardLogger, CSVLogger, or objects with "
                    f"log_hyperparams, log_metrics and finalize), got {type(logger).__name__}"
                )
        object.__setattr__(self, "loggers", loggers)
        _check_positive_int(self.every, "logging every")


def as_options(group, value, name, shorthand=()):
    """``value`` (fit's argument ``name``) as an instance of the option ``group``: itself, built from a dict
    of its fields or from a value of a ``shorthand`` type alone (its first field), or None for None."""
    if value is None or isinstance(value, group):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(group)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise TypeError(f"{group.__name__} has no option {unknown[0]!r}; its options are {sorted(known)}")
        return group(**value)
    if shorthand and isinstance(value, shorthand):
        return group(value)
    accepted = [_with_article(group.__name__), "a dict of its options", *(_with_article(t.__name__) for t in shorthand)]
    listed = ", ".join(accepted[:-1]) + f" or {accepted[-1]}"
    raise TypeError(f"{name} must be {listed}, got {type(value).__name__}")


def _with_article(noun):
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


def learning_rates(lr):
    """The learning rate of each role ``lr`` names (every role for a single number)."""
    if isinstance(lr, Mapping):
        unknown = set(lr) - set(ROLES)
        if unknown:
            raise ValueError(f"lr has unknown roles {sorted(unknown)}; roles are {ROLES}")
        return {role: _learning_rate(value, f"lr[{role!r}]") for role, value in lr.items()}
    return {role: _learning_rate(lr, "lr") for role in ROLES}


def _learning_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite positive number (or lr a dict by role {ROLES}), got {value!r}")
    return float(value)


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_compile(compile, precision):
    """``compile`` is False, True or ``"trace"``; the traced step takes no loss scaling."""
    if compile not in COMPILE:
        raise ValueError(f"compile must be one of {COMPILE}, got {compile!r}")
    if compile == "trace" and precision == "16-mixed":
        raise ValueError(
            "compile='trace' does not take precision='16-mixed': its loss scale changes from step to step outside "
            "the graph; use precision='bf16-mixed' (no loss scaling) or compile=True"
        )
