"""Which parameters belong to the model, the guide and the engine's helpers.

Engines route a different update to each role, and users give each role its
own learning rate, so a fit must know the roles. They are found once, by
the pair's probe (:mod:`pplgen.probe`), one run on one batch:

* candidates are the parameters of the modules behind model and guide, plus
  every ``pyro.param`` / ``pyro.module`` site the programs touch (so plain
  function programs work too);
* a parameter is the model's if log p(x, z) depends on it with z held fixed,
  else the guide's if log q(z | x) or the sampled z depend on it (only the
  samples, for an implicit guide site, which has no log q); parameters
  that neither touches (unused branches) are filed with the model;
* the engine's own parameters (e.g. nvil's baselines) are helpers, unless
  the engine fits them itself inside ``forward`` (avb's discriminator): then
  no optimizer of the caller's touches them.
"""

import torch

from pplgen.distributions import is_implicit
from pplgen.particles import model_log_density, site_log_prob
from pplgen.programs import owning_modules

ROLES = ("model", "guide", "helper")


def parameter_roles(probe, model, guide, engine):
    """``{role: [parameters]}`` of a pair, from its :class:`~pplgen.probe.Probe` (see the module docs)."""
    engine_params = list(engine.parameters())
    candidates = _unique(
        [p for m in owning_modules(model, guide) for p in m.parameters() if p.requires_grad]
        + list(probe.store_params.values()),
        exclude=engine_params,
    )
    model_side = _depends_on(model_log_density(probe.particles), candidates)
    guide_sites = probe.sites(probe.guide_trace)
    guide_terms = [site_log_prob(s).sum() for s in guide_sites if not is_implicit(s["fn"])]
    guide_terms += [value.sum() for value in probe.pathwise.values() if value.requires_grad]
    guide_side = _depends_on(sum(guide_terms), candidates)
    return {
        "model": [p for p, m, g in zip(candidates, model_side, guide_side) if m or not g],
        "guide": [p for p, m, g in zip(candidates, model_side, guide_side) if g and not m],
        "helper": [] if engine.fits_own_helpers else engine_params,
    }


def _depends_on(value, params):
    if not isinstance(value, torch.Tensor) or not value.requires_grad or not params:
        return [False] * len(params)
    grads = torch.autograd.grad(value.sum(), params, allow_unused=True, retain_graph=True)
    return [g is not None for g in grads]


def _unique(tensors, exclude=()):
    seen = {id(t) for t in exclude}
    unique = []
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique.append(tensor)
    return unique
