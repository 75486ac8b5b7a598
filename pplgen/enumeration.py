"""Model sites summed out exactly inside every particle: Pyro's parallel enumeration.

A model site annotated for enumeration (``infer={"enumerate": "parallel"}``,
or ``@config_enumerate``) that the guide does not draw is enumerated over its
support by Pyro's ``poutine.enum``, in dims left of the particle plate, and
summed out of log p(x, z) at each particle. The enumerated sites and every
model site whose density reads one become one factor of the model trace:

    log Σ_e Π_s p(s | e, ...)        per particle and per element of the data plates

contracted by Pyro's own ``pyro.ops.contract.contract_to_tensor`` (the
contraction ``TraceEnum_ELBO`` and ``infer_discrete`` use), so an enumerated
global read inside the data plate, nested plates and ``pyro.markov`` chains
(hidden Markov models) are summed out as Pyro sums them. The factor is a
``dist.Unit`` site (as ``pyro.factor`` makes) named ``enumerated(c, x)``.
The sites it absorbs keep their values (the data stay observed) with a zero
density, and the enumerated sites leave the trace. Every engine then reads the marginal where
it read log p(x, z): svi's ELBO is ``TraceEnum_ELBO``'s, and iwae, rws and
vimco weight their particles by it.

The sites summed out together need one scale, as in ``TraceEnum_ELBO``;
sequential enumeration is refused by name.
"""

from collections import OrderedDict

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing

from pplgen.checks import UnsupportedModelError
from pplgen.particles import is_sample_site, site_log_prob


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


def sum_out(model_trace, guide_trace, particle_dim, factor_dims):
    """The model trace with its enumerated sites (those the guide does not draw) summed out (see the module
    docs), per particle and per element of the plates at ``factor_dims``, by Pyro's tensor contraction
    (``pyro.ops.contract``)."""
    sites = [site for site in model_trace.nodes.values() if is_sample_site(site)]
    enumerated = [s for s in sites if _enumerate_dim(s) is not None and s["name"] not in guide_trace.nodes]
    if not enumerated:
        return model_trace
    model_trace.symbolize_dims()
    sum_dims = {site["infer"]["_dim_to_symbol"][_enumerate_dim(site)] for site in enumerated}
    terms = {site["name"]: packed.pack(site_log_prob(site), site["infer"]["_dim_to_symbol"]) for site in sites}
    group = [site for site in sites if sum_dims & set(terms[site["name"]]._pyro_dims)]
    _check_scales(group)
    tree = OrderedDict()
    for site in group:
        tree.setdefault(_ordinal(model_trace, site), []).append(terms[site["name"]])
    frames = {frame for site in group for frame in site["cond_indep_stack"] if frame.vectorized}
    kept = {frame for frame in frames if frame.dim == particle_dim or frame.dim in factor_dims}
    target = frozenset(model_trace.plate_to_symbol[frame.name] for frame in kept)
    sizes = {model_trace.plate_to_symbol[frame.name]: frame.size for frame in frames}
    for term in terms.values():
        sizes.update(zip(term._pyro_dims, term.shape))
    contracted = contract_to_tensor(tree, sum_dims, target_ordinal=target, ring=LogRing(dim_to_size=sizes))
    marginal = packed.unpack(contracted, model_trace.symbol_to_dim)
    dropped, absorbed = {site["name"] for site in enumerated}, {site["name"] for site in group}
    zero = dist.Unit(marginal.new_zeros(marginal.shape))  # an absorbed site's density now lives in the factor
    trace = poutine.Trace()
    for name, site in model_trace.nodes.items():
        if name not in dropped:
            trace.add_node(name, **({**site, "fn": zero} if name in absorbed else site))
    name = f"enumerated({', '.join(site['name'] for site in group)})"
    trace.add_node(name, **_factor_site(name, marginal, group[0], kept, sorted(absorbed)))
    return trace


def _ordinal(trace, site):
    """The symbols of the site's vectorized plates (the particle plate included), as Pyro's contraction
    orders its terms."""
    return frozenset(trace.plate_to_symbol[frame.name] for frame in site["cond_indep_stack"] if frame.vectorized)


def _enumerate_dim(site):
    return site["infer"].get("_enumerate_dim")


def _check_scales(group):
    """Every site of the group has the enumerated site's scale, as the sum over its values needs."""
    first = group[0]
    for site in group[1:]:
        if not _same_scale(site["scale"], first["scale"]):
            raise UnsupportedModelError(
                f"model site '{site['name']}' is summed out with the enumerated site '{first['name']}' but has "
                "another scale: the sum over its values needs one scale, as in Pyro's TraceEnum_ELBO; scale them "
                "alike."
            )


def _same_scale(a, b):
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool((a == b).all())
    return a == b


def _factor_site(name, marginal, like, plates, absorbed):
    """A ``dist.Unit`` site holding ``marginal`` in the kept ``plates`` (as ``pyro.factor`` records one)."""
    fn = dist.Unit(marginal)
    return {
        "type": "sample",
        "name": name,
        "fn": fn,
        "is_observed": True,
        "args": (),
        "kwargs": {},
        "value": fn.sample(),
        "infer": {"is_auxiliary": True, "summed_out": tuple(absorbed)},
        "scale": like["scale"],
        "mask": None,
        "cond_indep_stack": tuple(sorted(plates, key=lambda frame: frame.dim)),
        "done": True,
        "stop": False,
        "continuation": None,
    }
