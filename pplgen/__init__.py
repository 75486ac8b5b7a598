"""pplgen: deep generative models as Pyro programs, trained by interchangeable engines.

::

    import pplgen
    from pplgen.models import VAE

    x = pplgen.data.load("mnist", split="train", binarize="threshold")
    result = pplgen.fit(VAE(), "iwae", x, epochs=5)
    pplgen.evaluate.log_likelihood(result.model, x[:100], guide=result.guide, num_samples=1000)
"""

from pplgen import data, evaluate, inference
from pplgen.checks import UnsupportedModelError
from pplgen.engine import Engine, Loss
from pplgen.options import Checkpointing, Evaluation, Execution, Logging, Optimization
from pplgen.step import NonFiniteLossError, TrainingStep
from pplgen.structure import graph
from pplgen.training import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "Checkpointing",
    "Engine",
    "Evaluation",
    "Execution",
    "FitResult",
    "Logging",
    "Loss",
    "NonFiniteLossError",
    "Optimization",
    "TrainingStep",
    "UnsupportedModelError",
    "data",
    "evaluate",
    "fit",
    "graph",
    "inference",
]
