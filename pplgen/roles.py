"""Which parameters belong to the model, the guide and the engine's helpers.

Engines route a different update to each role, and users give each role its
own learning rate, so a fit must know the roles. They are found once, by
running the pair on one batch:

* candidates are the parameters of the modules behind model and guide, plus
  every ``pyro.param`` / ``pyro.module`` site the programs touch (so plain
  function programs work too);
* a parameter is the model's if log p(x, z) depends on it with z held fixed,
  else the guide's if log q(z | x) or the sampled z depend on it (only the
  samples, for an implicit guide site, which has no log q); parameters
  that neither touches (unused branches) are filed with the model;
* the engine's own parameters (baselines, discriminators) are helpers.
"""

import torch
from pyro import poutine

from pplgen.distributions import is_implicit
from pplgen.particles import guess_max_plate_nesting, model_log_density, sample_particles, site_log_prob
from pplgen.programs import owning_modules

ROLES = ("model", "guide", "helper")


def parameter_roles(model, guide, engine, args, kwargs):
    """``{role: [parameters]}`` and ``{name: parameter}`` of the Pyro param store sites used."""
    max_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
    with poutine.trace(param_only=True) as param_capture:
        particles = sample_particles(
            model, guide, args, kwargs, num_particles=1, max_plate_nesting=max_plate_nesting, latents="model_leaves"
        )
    store_params = {
        name: site["value"].unconstrained() for name, site in param_capture.trace.nodes.items()
    }
    helpers = list(engine.parameters())
    candidates = _unique(
        [p for m in owning_modules(model, guide) for p in m.parameters() if p.requires_grad]
        + list(store_params.values()),
        exclude=helpers,
    )
    model_side = _depends_on(model_log_density(particles), candidates)
    guide_sites = particles.sites(particles.guide_trace)
    guide_terms = [site_log_prob(s).sum() for s in guide_sites if not is_implicit(s["fn"])]
    guide_terms += [s["value"].sum() for s in guide_sites if s["value"].requires_grad]
    guide_side = _depends_on(sum(guide_terms), candidates)
    roles = {
        "model": [p for p, m, g in zip(candidates, model_side, guide_side) if m or not g],
        "guide": [p for p, m, g in zip(candidates, model_side, guide_side) if g and not m],
        "helper": helpers,
    }
    return roles, store_params


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
