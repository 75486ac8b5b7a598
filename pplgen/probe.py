"""One probe of a model/guide pair: what every engine, ``fit`` and evaluation need to know, from one run.

::

    probe = probe_pair(model, guide, (x,), {})
    probe.max_plate_nesting, probe.plates["data"], probe.downstream, probe.store_params

The guide runs once and the model replays its draws, inside
``poutine.block`` and with the random number generators restored afterwards,
so probing (before training, or after a resume) changes no draw that follows.
Each latent is cut from the guide's graph as it is drawn and replaced by a
fresh leaf that requires grad; the draw before the cut is kept too. From
these one run yields

* the traces and sites, with their scales, masks and reparameterizability
  (the :class:`~pplgen.particles.Particles` of one particle),
* the plates by name, with dim, size and subsample size (sibling plates that
  reuse a dim are separate plates, as in Pyro),
* ``max_plate_nesting``,
* the ``pyro.param`` sites the programs touch,
* dependencies, by autograd from the leaves: which densities each latent
  reaches (:mod:`pplgen.dependencies`),

and the pair is validated once, by pplgen's checks and Pyro's own
(:mod:`pplgen.checks`), so engines refuse a pair in ``check`` and never
later, at a step.
"""

from dataclasses import dataclass
from functools import cached_property

import torch
from pyro import poutine

from pplgen.checks import check_pair
from pplgen.dependencies import downstream_sites, prior_parents
from pplgen.enumeration import enumerated_sites
from pplgen.particles import (
    PARTICLE_PLATE,
    Particles,
    plate_nesting,
    shared_plate_dims,
    site_batch_shape,
    site_structure,
)
from pplgen.sampling import DetachLatents


@dataclass(frozen=True)
class Plate:
    """A ``pyro.plate`` as the programs used it. ``dim`` is None for a sequential plate."""

    name: str
    dim: int | None
    size: int
    subsample_size: int


@dataclass(eq=False)
class Probe:
    """What one run of a model/guide pair tells (see the module docs): the plan every phase reads.

    ``particles`` holds one particle whose latents are leaves requiring grad
    (floating-point draws); ``pathwise`` the guide's draws before the cut, by
    site name; ``store_params`` the unconstrained ``pyro.param`` values used.
    ``vectorized`` says whether several particles run at once (True), one run
    each (False), or has not been tried (None: a one-particle engine);
    ``data_arguments`` which argument holds each observed site's data, for an
    engine that dreams in its place (:mod:`pplgen.dreams`), once found;
    ``stepped`` whether an engine's step has run on the plan (its first step
    tries what :meth:`~pplgen.engine.Engine.rehearse` tries); ``enumerated``
    the model sites summed out of every particle (:mod:`pplgen.enumeration`);
    ``guide_enumerated`` the guide sites that ask to be enumerated.
    """

    particles: Particles
    pathwise: dict
    store_params: dict
    max_plate_nesting: int
    vectorized: bool | None = None
    data_arguments: dict | None = None
    stepped: bool = False
    enumerated: tuple = ()
    guide_enumerated: tuple = ()

    @property
    def structure(self):
        """The pair's site set (see :func:`site_structure`)."""
        return site_structure(self.particles)

    @property
    def model_trace(self):
        return self.particles.model_trace

    @property
    def guide_trace(self):
        return self.particles.guide_trace

    def sites(self, trace, *, observed=None):
        return self.particles.sites(trace, observed=observed)

    @cached_property
    def plates(self):
        """``{name: Plate}`` of every plate a sample site of model or guide sits in."""
        plates = {}
        for trace in (self.model_trace, self.guide_trace):
            for site in self.sites(trace):
                for frame in site["cond_indep_stack"]:
                    if frame.name != PARTICLE_PLATE:
                        plate = _plate(frame, site)
                        known = plates.get(frame.name)
                        plates[frame.name] = plate if known is None or plate.size > known.size else known
        return plates

    @cached_property
    def downstream(self):
        """The model and guide sites in each guide latent's local learning signal."""
        with torch.enable_grad():  # read off autograd, whatever the caller's mode
            return downstream_sites(self.particles)

    @cached_property
    def prior_parents(self):
        """``{model latent: the other latents its prior density reads}``."""
        with torch.enable_grad():
            return prior_parents(self.particles)


def _plate(frame, site):
    """The plate of ``frame`` as ``site`` sits in it; a size-less ``pyro.plate(name)`` (Pyro records size −1)
    takes the size its sites broadcast to."""
    size = frame.size
    if frame.vectorized and size == -1:
        shape = site_batch_shape(site)
        size = shape[frame.dim] if len(shape) >= -frame.dim else 1
    full_size = frame.full_size if frame.full_size not in (None, -1) else size
    return Plate(frame.name, frame.dim if frame.vectorized else None, full_size, size)


def dtype_hint(error, args, kwargs):
    """Advice for a program that failed on arguments of an unusual dtype, or on a dtype clash (torch's
    message names neither the data nor the weights); empty when neither is the case."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    unusual = any(t.dtype != torch.get_default_dtype() for t in tensors)
    if not unusual and "dtype" not in str(error):
        return ""
    dtypes = sorted({str(t.dtype) for t in tensors})
    return (
        f"\nThe arguments hold {', '.join(dtypes)}: give the data the dtype of the model's parameters "
        "(usually torch.float32: data.float(); pplgen.data.load returns float32)."
    )


def probe_pair(model, guide, args, kwargs, *, max_plate_nesting=None, check=True):
    """Run the pair once and check it (see the module docs); returns a :class:`Probe`.

    Raises ``ValueError`` when the programs fail together or the pair is
    malformed (pplgen's checks and Pyro's, with the site's name). Engines
    that train a model without its guide (gan) probe it with
    :func:`pplgen.programs.no_guide` and ``check=False``: every latent is
    then the model's own draw.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    cut = DetachLatents(requires_grad=True)
    # Autograd on whatever the caller's mode (an engine's no_grad helper steps): dependencies are read off it.
    params = poutine.trace(param_only=True)
    with torch.random.fork_rng(devices=devices), torch.enable_grad(), poutine.block(), params:
        try:
            with cut:
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        except (ValueError, RuntimeError, TypeError, IndexError, KeyError, NotImplementedError) as error:
            raise ValueError(
                f"model and guide fail when run together on these arguments: {error}{dtype_hint(error, args, kwargs)}"
            ) from error
    nesting = plate_nesting(guide_trace, model_trace)
    if max_plate_nesting is not None:
        if max_plate_nesting < nesting:
            raise ValueError(
                f"max_plate_nesting={max_plate_nesting} but the programs use {nesting} plate dims; "
                f"pass max_plate_nesting={nesting} or more (or leave it None to find it)."
            )
        nesting = max_plate_nesting
    particles = Particles(guide_trace, model_trace, 1, -nesting - 1, shared_plate_dims(guide_trace, model_trace))
    store_params = {name: site["value"].unconstrained() for name, site in params.trace.nodes.items()}
    probe = Probe(
        particles,
        dict(cut.pathwise),
        store_params,
        nesting,
        enumerated=enumerated_sites(model_trace, guide_trace),
        guide_enumerated=tuple(s["name"] for s in particles.sites(guide_trace) if s["infer"].get("enumerate")),
    )
    if check:
        check_pair(probe)
    return probe
