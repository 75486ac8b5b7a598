"""Which log-density terms each guide latent can move: local learning signals.

A score-function estimator multiplies the score ∇φ log q(z_s | ·) of a guide
site s by a learning signal. Any term of log p(x, z) − log q(z | x) that is a
function of latents that are not *descendants* of z_s in the guide has zero
covariance with that score (a node is independent of its non-descendants
given its parents), so it can be dropped without bias. What is left is the
site's local learning signal, the Rao–Blackwellization NVIL's per-layer
signals (Mnih & Gregor 2014, §3.3) and Pyro's ``TraceGraph_ELBO`` use.

The dependencies are found from the program itself, once, by autograd: the
guide runs with every latent drawn as a fresh leaf that requires grad, the
model replays them, and a density depends on a latent when autograd connects
the two. Latents that cannot carry gradients (integer-valued draws), and
those that autograd sees reaching no density but their own (the program
casts them to integers, as in ``locs[h.long()]``), are conservatively taken
to reach every term.
"""

from dataclasses import dataclass

import torch

from pplgen.particles import site_log_prob


@dataclass(frozen=True)
class Downstream:
    """For each guide site, the model sites and guide sites in its local learning signal."""

    model: dict[str, frozenset]
    guide: dict[str, frozenset]


def downstream_sites(particles):
    """The terms each guide site's score must be multiplied by (see the module docs).

    ``particles`` must hold latents drawn as leaves that require grad
    (:data:`~pplgen.sampling.LEAVES`, as :func:`pplgen.probe.probe_pair` draws them).
    """
    guide_sites = particles.sites(particles.guide_trace)
    model_sites = particles.sites(particles.model_trace)
    latents = [site["name"] for site in guide_sites if not site["is_observed"]]
    leaves = _leaves(particles)
    model_reads = {site["name"]: density_reads(site, leaves) for site in model_sites}
    guide_reads = {site["name"]: density_reads(site, leaves) for site in guide_sites}
    opaque = (set(latents) - set(leaves)) | _read_by_no_other_density(leaves, model_reads, guide_reads)
    model_reads = {name: reads | opaque for name, reads in model_reads.items()}
    guide_reads = {name: reads | opaque | {name} for name, reads in guide_reads.items()}
    descendants = _descendants(latents, guide_reads)
    return Downstream(
        model={s: frozenset(n for n, reads in model_reads.items() if reads & descendants[s]) for s in latents},
        guide={s: frozenset(n for n, reads in guide_reads.items() if reads & descendants[s]) for s in latents},
    )


def prior_parents(particles):
    """``{latent site: names of the other latents its prior density reads}`` in the model.

    Empty sets everywhere mean a prior of independent sites, p(z) = Π_s p(z_s).
    ``particles`` as for :func:`downstream_sites`.
    """
    leaves = _leaves(particles)
    return {
        site["name"]: density_reads(site, leaves) - {site["name"]}
        for site in particles.sites(particles.model_trace, observed=False)
    }


def _leaves(particles):
    return {
        s["name"]: s["value"]
        for s in particles.sites(particles.guide_trace, observed=False)
        if s["value"].requires_grad and s["value"].is_leaf
    }


def _read_by_no_other_density(leaves, *reads_by_site):
    """Latents that no density but their own reads: unused, or, more likely, cast by the program to an integer
    (``locs[h.long()]``), which cuts autograd's path. Either way they are taken as opaque, so nothing is dropped."""
    read = set()
    for reads in reads_by_site:
        for name, names in reads.items():
            read |= names - {name}
    return set(leaves) - read


def density_reads(site, leaves):
    """Names of the latents (of ``{name: leaf value}``) whose values the site's log-density is a function of."""
    log_prob = site_log_prob(site)
    if not log_prob.requires_grad or not leaves:
        return set()
    grads = torch.autograd.grad(log_prob.sum(), list(leaves.values()), allow_unused=True, retain_graph=True)
    return {name for name, grad in zip(leaves, grads) if grad is not None}


def _descendants(latents, guide_reads):
    """Each guide latent with every guide latent drawn from it, directly or not (guide order is topological)."""
    descendants = {s: {s} for s in latents}
    for position, site in enumerate(latents):
        for later in latents[position + 1 :]:
            if guide_reads[later] & descendants[site]:
                descendants[site].add(later)
    return descendants
