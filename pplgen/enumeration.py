"""Model sites summed out exactly inside every particle: Pyro's parallel enumeration.

A model site annotated for enumeration (``infer={"enumerate": "parallel"}``,
or ``@config_enumerate``) that the guide does not draw is enumerated over its
support by Pyro's ``poutine.enum``, in dims left of the particle plate, and
summed out of log p(x, z) at each particle. The site and every model site
whose density reads it become one factor of the model trace:

    log Σ_e p(e) Π_s p(s | e, ...)        per particle and datum

a ``dist.Unit`` site (as ``pyro.factor`` makes) named ``enumerated(c, x)``.
The sites it absorbs keep their values (the data stay observed) with a zero
density, and the enumerated sites leave the trace. Every engine then reads the marginal where
it read log p(x, z): svi's ELBO is ``TraceEnum_ELBO``'s, and iwae, rws and
vimco weight their particles by it.

The sum is taken per element of the sites' plates, so every site of the
group must sit in the same plates, as a mixture's assignment per datum or a
topic per word does. A site read across plates (an enumerated global, a
``pyro.markov`` chain) is refused by name, as is sequential enumeration.
"""

import pyro.distributions as dist
import torch
from pyro import poutine

from pplgen.checks import UnsupportedModelError
from pplgen.particles import PARTICLE_PLATE, is_sample_site, site_log_prob, vectorized_plates


def enumerated_sites(model_trace, guide_trace):
    """Names of the model's latent sites that ask for parallel enumeration and that the guide does not draw."""
    return tuple(
        name
        for name, site in model_trace.nodes.items()
        if is_sample_site(site)
        and not site["is_observed"]
        and site["infer"].get("enumerate") == "parallel"
        and name not in guide_trace.nodes
    )


def enumerate_model(model, particle_dim):
    """``model`` with its annotated sites enumerated in dims left of the particle plate's."""
    return poutine.enum(model, first_available_dim=particle_dim - 1)


def sum_out(model_trace):
    """The model trace with its enumerated sites summed out (see the module docs)."""
    sites = [site for site in model_trace.nodes.values() if is_sample_site(site)]
    enumerated = [site for site in sites if _enumerate_dim(site) is not None]
    if not enumerated:
        return model_trace
    dims = {_enumerate_dim(site) for site in enumerated}
    readers = [site for site in sites if _enumerate_dim(site) is None and _reads(site_log_prob(site), dims)]
    group = enumerated + readers
    _check_group(group)
    marginal = torch.logsumexp(sum(site_log_prob(site) for site in group), dim=sorted(dims))
    dropped, masked = {site["name"] for site in enumerated}, {site["name"] for site in readers}
    absorbed = dist.Unit(marginal.new_zeros(marginal.shape))  # a reader's density now lives in the factor
    trace = poutine.Trace()
    for name, site in model_trace.nodes.items():
        if name not in dropped:
            trace.add_node(name, **({**site, "fn": absorbed} if name in masked else site))
    name = f"enumerated({', '.join(site['name'] for site in group)})"
    trace.add_node(name, **_factor_site(name, marginal, group[0]))
    return trace


def _enumerate_dim(site):
    return site["infer"].get("_enumerate_dim")


def _reads(log_prob, dims):
    """Whether a log-density varies along any of the enumeration ``dims``."""
    return any(log_prob.dim() >= -dim and log_prob.shape[dim] > 1 for dim in dims)


def _check_group(group):
    """Every site of the group sits in the enumerated site's plates and has its scale."""
    first = group[0]
    for site in group[1:]:
        if vectorized_plates(site) != vectorized_plates(first):
            raise UnsupportedModelError(
                f"model site '{site['name']}' reads the enumerated site '{first['name']}' in other plates "
                f"({_plate_names(site)} against {_plate_names(first)}): pplgen sums an enumerated site out per "
                "element of its plates, so every site that reads it must sit in the same plates (an enumerated "
                "global or a pyro.markov chain is not summed out); draw the site in the guide, or train with "
                "Pyro's TraceEnum_ELBO."
            )
        if not _same_scale(site["scale"], first["scale"]):
            raise UnsupportedModelError(
                f"model site '{site['name']}' reads the enumerated site '{first['name']}' but has another scale: "
                "the sum over its values needs one scale, as in Pyro's TraceEnum_ELBO; scale them alike."
            )


def _plate_names(site):
    return sorted(name for name, _ in vectorized_plates(site))


def _same_scale(a, b):
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool((a == b).all())
    return a == b


def _factor_site(name, marginal, like):
    """A ``dist.Unit`` site holding ``marginal`` in the plates of ``like`` (as ``pyro.factor`` records one)."""
    fn = dist.Unit(marginal)
    return {
        "type": "sample",
        "name": name,
        "fn": fn,
        "is_observed": True,
        "args": (),
        "kwargs": {},
        "value": fn.sample(),
        "infer": {"is_auxiliary": True, "summed_out": True},
        "scale": like["scale"],
        "mask": None,
        "cond_indep_stack": tuple(f for f in like["cond_indep_stack"] if f.vectorized or f.name == PARTICLE_PLATE),
        "done": True,
        "stop": False,
        "continuation": None,
    }
