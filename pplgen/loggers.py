"""A fit's metrics to the loggers people watch training with: Lightning Fabric's ``TensorBoardLogger`` and
``CSVLogger``, or any ``lightning_fabric.loggers.Logger``.

::

    from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

    pplgen.fit(vae, "iwae", x, epochs=10, evaluation=x_test,
               loggers=pplgen.Logging([TensorBoardLogger("runs/tb"), CSVLogger("runs/csv")], every=50))

What each logger gets, from the first process only (the others log nothing):

* the run's settings once, before the first step, as hyperparameters (engine and its options, learning rates,
  batch size, seed, precision, processes, the data's fingerprint); a logger that takes none (Fabric's
  ``CSVLogger``) finds them in ``settings.json`` in its ``log_dir``;
* every ``every``-th step's metrics, each as ``train/<name>`` at the step's number (the floats the step already
  copied to the host; nothing more is copied);
* each held-out evaluation as ``eval/<name>`` (its numbers; the estimator's name is a setting, not a metric);
* at the end, ``finalize("success")``, or ``"failed"`` when the run stops on an error.

``pplgen fit --logger tensorboard --logger csv --log-every 50`` writes them into the run folder's ``logs/``.
"""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pplgen.distributed import rank
from pplgen.files import write_atomically
from pplgen.options import Logger, Logging

#: The loggers ``pplgen fit --logger`` builds, by name (Fabric's classes of these names): each writes under
#: ``<run folder>/logs/<name>``.
NAMED_LOGGERS = {"tensorboard": "TensorBoardLogger", "csv": "CSVLogger"}


def named_loggers(names: Sequence[str], root) -> list[Logger]:
    """The loggers of ``names`` (:data:`NAMED_LOGGERS`), each writing under ``root / name``."""
    # Imported here: importing lightning_fabric installs warning filters, which `import pplgen` should not.
    from lightning_fabric import loggers

    return [
        getattr(loggers, NAMED_LOGGERS[name])(root_dir=root, name=name, version="") for name in dict.fromkeys(names)
    ]


class MetricsLog:
    """The loggers of a fit, on the first process; a fit without loggers logs nothing, at no cost."""

    def __init__(self, logging: Logging | None):
        self.loggers = tuple(logging.loggers) if logging is not None and rank() == 0 else ()
        self.every = logging.every if logging is not None else 1

    def settings(self, settings: Mapping):
        for logger in self.loggers:
            try:
                logger.log_hyperparams(dict(settings))
            except NotImplementedError:
                logger.experiment  # noqa: B018 -- creates the log folder (and would warn about a file put there first)
                folder = Path(logger.log_dir)
                text = json.dumps(settings, indent=2, default=str)
                write_atomically(folder / "settings.json", lambda path, text=text: Path(path).write_text(text))

    def step(self, step: int, metrics: Mapping[str, float]):
        if self.loggers and step % self.every == 0:
            self._log({f"train/{name}": value for name, value in metrics.items()}, step)

    def evaluation(self, step: int, scores: Mapping):
        numbers = {
            f"eval/{name}": value
            for name, value in scores.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
        if self.loggers and numbers:
            self._log(numbers, step)

    def finish(self, status: str):
        for logger in self.loggers:
            logger.finalize(status)

    def _log(self, metrics, step):
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
