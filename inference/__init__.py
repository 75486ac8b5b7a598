"""Inference engines, one per module, and the registry that names them.

Adding an engine: write its module, add one line to ``ENGINES`` and one row
to the conformance table (``tests/support/outcomes.py``). Every "use X
instead" in a refusal is derived here from the engines' traits (the class
attributes of :class:`pplgen.engine.Engine`), so no other file names engines.
"""

from pplgen.engine import Engine
from pplgen.inference.avb import AVB
from pplgen.inference.disarm import DisARM
from pplgen.inference.gan import GAN
from pplgen.inference.gumbel import Gumbel
from pplgen.inference.iwae import IWAE
from pplgen.inference.nvil import NVIL
from pplgen.inference.rebar import Rebar
from pplgen.inference.relax import Relax
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
    "disarm": DisARM,
    "gumbel": Gumbel,
    "rebar": Rebar,
    "relax": Relax,
}


def get(name: str, **options) -> Engine:
    """An engine by its registry name, built with ``options``."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; registered engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[name](**options)


def guided_engines() -> list[str]:
    """Names of the registered engines that train a model/guide pair (all but guide-free ones such as gan)."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide]


def score_function_engines() -> list[str]:
    """Names of the registered engines that train guides without ``rsample``, whatever their sites' kind (not
    those for binary sites only, nor those that relax discrete sites)."""
    return [
        name
        for name, engine in ENGINES.items()
        if engine.needs_guide
        and not engine.requires_rsample
        and not engine.binary_latents_only
        and not engine.relaxes_discrete
    ]


def binary_engines() -> list[str]:
    """Names of the registered engines whose estimator is defined for binary (Bernoulli) guide sites only."""
    return [name for name, engine in ENGINES.items() if engine.binary_latents_only]


def unrelaxed_engines() -> str:
    """The advice of a relaxation engine's refusal: the engines that train discrete sites as they are drawn."""
    return f"{', '.join(score_function_engines())}, or (binary sites) {', '.join(binary_engines())}"


def per_site_engines() -> list[str]:
    """Names of the registered engines that weight each site's term on its own (no importance weights)."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide and not engine.needs_common_scale]


def enumerating_engines() -> list[str]:
    """Names of the registered engines that sum the model's enumerated sites out of log p(x, z)."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide and engine.sums_out_enumerated]


def guide_enumerating_engines() -> list[str]:
    """Names of the registered engines that sum enumerated guide sites over their support."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide and engine.sums_out_guide_enumeration]


def pathwise_engines() -> list[str]:
    """Names of the registered engines that differentiate through the draws of guides with densities."""
    return [
        name
        for name, engine in ENGINES.items()
        if engine.needs_guide and engine.requires_rsample and not engine.implicit_guides
    ]


def implicit_guide_engines() -> list[str]:
    """Names of the registered engines that train guides without a density (``Implicit`` samplers)."""
    return [name for name, engine in ENGINES.items() if engine.needs_guide and engine.implicit_guides]


def engines_without_dreams() -> list[str]:
    """Names of the registered score-function engines that train on the data alone (no dreams)."""
    return [name for name in score_function_engines() if not ENGINES[name].dreams]


def likelihood_engines() -> str:
    """The advice of a refusal that points to training the model with a guide, from the registry."""
    return f"{' or '.join(pathwise_engines())} for continuous latents; {' or '.join(engines_without_dreams())} for any"


__all__ = [
    "AVB",
    "ENGINES",
    "GAN",
    "IWAE",
    "NVIL",
    "RWS",
    "SVI",
    "VIMCO",
    "DisARM",
    "Gumbel",
    "Rebar",
    "Relax",
    "WakeSleep",
    "binary_engines",
    "engines_without_dreams",
    "enumerating_engines",
    "get",
    "guide_enumerating_engines",
    "guided_engines",
    "implicit_guide_engines",
    "likelihood_engines",
    "pathwise_engines",
    "per_site_engines",
    "score_function_engines",
    "unrelaxed_engines",
]
