"""Inference engines, one per module, and the registry that names them.

Adding an engine: write its module, add one line to ``ENGINES``, one row to
the conformance table in ``tests/inference/test_conformance.py`` and one entry
to the README's engine table.
"""

from pplgen.inference.avb import AVB
from pplgen.inference.gan import GAN
from pplgen.inference.iwae import IWAE
from pplgen.inference.nvil import NVIL
from pplgen.inference.rws import RWS
from pplgen.inference.svi import SVI
from pplgen.inference.vimco import VIMCO
from pplgen.inference.wake_sleep import WakeSleep

ENGINES = {
    "svi": SVI,
    "iwae": IWAE,
    "wake_sleep": WakeSleep,
    "rws": RWS,
    "nvil": NVIL,
    "vimco": VIMCO,
    "avb": AVB,
    "gan": GAN,
}


def get(name, **options):
    """An engine by its registry name, built with ``options``."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; registered engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[name](**options)


def guided_engines():
    """Names of the registered engines that train a model/guide pair (all but guide-free ones such as gan)."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide]


def score_function_engines():
    """Names of the registered engines that train guides without ``rsample``."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide and not engine.reparameterized]


def per_site_engines():
    """Names of the registered engines that weight each site's term on its own (no importance weights)."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide and not engine.needs_common_scale]


__all__ = [
    "AVB",
    "ENGINES",
    "GAN",
    "IWAE",
    "NVIL",
    "RWS",
    "SVI",
    "VIMCO",
    "WakeSleep",
    "get",
    "guided_engines",
    "per_site_engines",
    "score_function_engines",
]
