"""Annealed importance sampling of log p(x), for models whose guide has no density.

Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of
Decoder-Based Generative Models"; Neal (2001). Chains start at the prior and
pass through π_t(z) ∝ p(z) p(x | z)^β_t, 0 = β_0 < … < β_T = 1; each chain's
weight is

    log w = Σ_t (β_t − β_{t−1}) log p(x | z_{t−1}),   z_t ~ HMC targeting π_t from z_{t−1}

and log p̂(x) = log (1/C) Σ_c w_c is a stochastic lower bound on log p(x)
(E[p̂] = p(x)), tighter as T grows. Everything is vectorized over the C chains
(a particle plate) and the data of a batch (the model's data plate).

HMC runs on unconstrained coordinates (each latent's support mapped to ℝⁿ by
``biject_to``, with its Jacobian), with ``leapfrog_steps`` leapfrog steps and
an identity mass matrix; each datum's step size is adapted after every
transition toward the acceptance rate ``target_acceptance`` (×1.02 or ÷1.02),
as Wu et al. do. The latents must be continuous; discrete sites annotated
for enumeration (``infer={"enumerate": "parallel"}``) are summed out of
p(x | z) exactly at every point, as the engines sum them out
(:mod:`pplgen.enumeration`), so the chains anneal toward
p(z) Σ_e p(e | z) p(x | e, z).

Cost: about T × leapfrog_steps passes of the model over C × batch, each
with a backward pass: about T × leapfrog_steps × C / K times the cost of
importance sampling with K particles. Diverging leapfrog trajectories
(non-finite densities) are rejected, not raised.
"""

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to

from pplgen.enumeration import enumerate_model, enumerated_sites, sum_out
from pplgen.particles import (
    PARTICLE_PLATE,
    is_sample_site,
    plate_nesting,
    reduce_to_factors,
    shared_plate_dims,
    site_log_prob,
)

SCHEDULES = ("sigmoid", "linear")


@torch.no_grad()
def ais(
    model,
    data,
    *,
    num_steps=500,
    num_chains=16,
    leapfrog_steps=10,
    step_size=0.05,
    target_acceptance=0.65,
    schedule="sigmoid",
    batch_size=100,
):
    """AIS estimate of log p(x) for each datum of ``data``, shape ``(N,)`` (see the module docs).

    :param model: a Pyro model, or an object with ``.model`` (its guide is not used).
    :param data: tensor ``(N, ...)``; each batch is passed as the model's single argument.
    :param num_steps: T, intermediate distributions.
    :param num_chains: C, independent chains per datum.
    :param schedule: ``"sigmoid"`` (Grosse et al. 2015, dense near both ends) or ``"linear"`` β_t.
    """
    model = getattr(model, "model", model)
    for name, value in [("num_steps", num_steps), ("num_chains", num_chains), ("leapfrog_steps", leapfrog_steps)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    if not callable(model):
        raise TypeError(f"model must be a Pyro program or have a .model method, got {type(model).__name__}")
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a tensor of shape (N, ...), got {type(data).__name__}")
    dtype = data.dtype if data.is_floating_point() else torch.get_default_dtype()
    betas = annealing_schedule(num_steps, schedule, dtype=dtype, device=data.device)
    results = []
    for batch in data.split(batch_size):
        target = _Target(model, batch, num_chains)
        results.append(_anneal(target, betas, leapfrog_steps, step_size, target_acceptance))
    return torch.cat(results)


def annealing_schedule(num_steps, schedule="sigmoid", *, dtype=None, device=None):
    """β_0 = 0, …, β_T = 1 as a tensor of ``num_steps + 1`` values."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    t = torch.linspace(0, 1, num_steps + 1, dtype=dtype, device=device)
    if schedule == "linear":
        return t
    sigmoid = torch.sigmoid(4.0 * (2 * t - 1))
    return (sigmoid - sigmoid[0]) / (sigmoid[-1] - sigmoid[0])


def _anneal(target, betas, leapfrog_steps, step_size, target_acceptance):
    """One batch: log p̂(x) per datum, ``(B,)``."""
    u = target.prior_draw()
    log_prior, log_lik, grad_prior, grad_lik = target.evaluate(u)
    log_w = torch.zeros_like(log_lik)
    step = torch.full(log_lik.shape[1:], float(step_size), dtype=log_lik.dtype, device=log_lik.device)
    for previous, beta in zip(betas[:-1], betas[1:]):
        log_w += (beta - previous) * log_lik
        if beta == betas[-1]:  # the weights are complete; a last move would not change them
            break
        state = _State(u, log_prior, log_lik, grad_prior, grad_lik)
        state, accepted = _hmc(target, state, beta, step, leapfrog_steps)
        u, log_prior, log_lik, grad_prior, grad_lik = (
            state.u,
            state.log_prior,
            state.log_lik,
            state.grad_prior,
            state.grad_lik,
        )
        step = torch.where(accepted.mean(0) > target_acceptance, step * 1.02, step / 1.02)
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


@dataclass
class _State:
    """A point of every chain: unconstrained latents, log p(z) (with Jacobian), log p(x | z) and their gradients."""

    u: dict
    log_prior: torch.Tensor
    log_lik: torch.Tensor
    grad_prior: dict
    grad_lik: dict


def _hmc(target, state, beta, step, leapfrog_steps):
    """One HMC transition targeting log p(z) + β log p(x | z) on every chain; the new state and
    the acceptances ``(C, B)``."""

    def grad(s):
        return {n: s.grad_prior[n] + beta * s.grad_lik[n] for n in s.u}

    momentum = {n: torch.randn_like(v) for n, v in state.u.items()}
    initial_energy = -(state.log_prior + beta * state.log_lik) + target.kinetic(momentum)
    proposal, p = state, {n: m + 0.5 * target.scaled(step, grad(state)[n], n) for n, m in momentum.items()}
    for i in range(leapfrog_steps):
        u = {n: proposal.u[n] + target.scaled(step, p[n], n) for n in p}
        proposal = _State(u, *target.evaluate(u))
        fraction = 1.0 if i < leapfrog_steps - 1 else 0.5
        p = {n: p[n] + fraction * target.scaled(step, grad(proposal)[n], n) for n in p}
    energy = -(proposal.log_prior + beta * proposal.log_lik) + target.kinetic(p)
    log_accept = (initial_energy - energy).nan_to_num(nan=-math.inf).clamp(max=0.0)
    accepted = torch.rand_like(log_accept).log() < log_accept
    keep = {n: target.per_factor(accepted, n) for n in state.u}
    merged = _State(
        {n: torch.where(keep[n], proposal.u[n], state.u[n]) for n in state.u},
        torch.where(accepted, proposal.log_prior, state.log_prior),
        torch.where(accepted, proposal.log_lik, state.log_lik),
        {n: torch.where(keep[n], proposal.grad_prior[n], state.grad_prior[n]) for n in state.u},
        {n: torch.where(keep[n], proposal.grad_lik[n], state.grad_lik[n]) for n in state.u},
    )
    return merged, accepted.to(log_accept.dtype)


class _Target:
    """The model on one batch as log-densities of unconstrained latents, per chain and datum ``(C, B)``."""

    def __init__(self, model, batch, num_chains):
        self.model, self.batch, self.num_chains = model, batch, num_chains
        with poutine.block():
            trace = poutine.trace(model).get_trace(batch)
        self.particle_dim = -plate_nesting(trace) - 1
        self.factor_dims = shared_plate_dims(trace)
        if len(self.factor_dims) != 1:
            raise ValueError(
                "ais needs every sample site of the model inside one data plate (found shared plate dims "
                f"{self.factor_dims}); put the batch in pyro.plate('data', N)."
            )
        self.enumerated = enumerated_sites(trace, poutine.Trace())
        latents = [
            s
            for s in trace.nodes.values()
            if is_sample_site(s) and not s["is_observed"] and s["name"] not in self.enumerated
        ]
        if not latents:
            raise ValueError("ais found no latent site in the model: log p(x) needs no estimate there")
        for site in latents:
            if site["fn"].support.is_discrete:
                raise ValueError(
                    f"site '{site['name']}' is discrete ({type(site['fn']).__name__}): ais moves latents with HMC "
                    "and needs continuous ones; annotate it infer={'enumerate': 'parallel'} to sum it out, or use "
                    "pplgen.evaluate.log_likelihood with a guide."
                )
        self.transforms = {s["name"]: biject_to(s["fn"].support) for s in latents}
        # Event dims of the unconstrained values u (a Cholesky factor's u is a vector).
        self.event_dims = {name: transform.domain.event_dim for name, transform in self.transforms.items()}

    def _plate(self):
        return pyro.plate(PARTICLE_PLATE, self.num_chains, dim=self.particle_dim)

    def prior_draw(self):
        """Unconstrained latents of C draws from the prior, per datum."""
        with poutine.block(), self._plate():
            trace = poutine.trace(self.model).get_trace(self.batch)
        return {n: self.transforms[n].inv(trace.nodes[n]["value"]).detach() for n in self.transforms}

    def evaluate(self, u):
        """log p(z) + log |det ∂z/∂u|, log p(x | z), and their gradients in u."""
        with torch.enable_grad():
            u = {n: v.detach().requires_grad_() for n, v in u.items()}
            z = {n: self.transforms[n](v) for n, v in u.items()}
            # Off: a diverging trajectory may leave the support; its proposal is then rejected.
            with poutine.block(), self._plate(), pyro.validation_enabled(False):
                trace = poutine.trace(self._conditioned(z)).get_trace(self.batch)
            if self.enumerated:
                trace = self._sum_out(trace)
            log_prior = sum(self._reduce(self.transforms[n].log_abs_det_jacobian(u[n], z[n])) for n in u)
            log_lik = 0.0
            for site in trace.nodes.values():
                if not is_sample_site(site):
                    continue
                log_prob = self._reduce(site_log_prob(site))
                if site["name"] in u:
                    log_prior = log_prior + log_prob
                else:
                    log_lik = log_lik + log_prob
            grad_prior = torch.autograd.grad(log_prior.sum(), list(u.values()), retain_graph=True)
            grad_lik = torch.autograd.grad(log_lik.sum(), list(u.values()))
        return log_prior.detach(), log_lik.detach(), dict(zip(u, grad_prior)), dict(zip(u, grad_lik))

    def _conditioned(self, z):
        """The model at latents ``z``, its enumerated sites enumerated left of the chains' plate."""
        model = poutine.condition(self.model, data=z)
        return enumerate_model(model, self.particle_dim) if self.enumerated else model

    def _sum_out(self, trace):
        """``trace`` with its enumerated sites summed out into one factor of p(x | z)."""
        trace = sum_out(trace, poutine.Trace(), self.particle_dim, self.factor_dims)
        for site in trace.nodes.values():
            moved = set(site.get("infer", {}).get("summed_out", ())) & set(self.transforms)
            if moved:
                raise ValueError(
                    f"latent site '{sorted(moved)[0]}' depends on the enumerated site "
                    f"'{self.enumerated[0]}': ais anneals p(x | z) with the enumerated sites summed out and "
                    "needs the prior of the continuous latents free of them; use pplgen.evaluate.log_likelihood "
                    "with a guide."
                )
        return trace

    def _reduce(self, log_prob):
        return reduce_to_factors(log_prob, self.particle_dim, self.factor_dims)

    def per_factor(self, values, name):
        """``values`` of shape ``(C, B)`` shaped to broadcast against site ``name``'s unconstrained value."""
        ndim = -self.particle_dim
        data_position = ndim + self.factor_dims[0]
        shape = [1] * ndim
        shape[0], shape[data_position] = values.shape
        return values.reshape(*shape, *[1] * self.event_dims[name])

    def scaled(self, step, value, name):
        """``step`` (one per datum) times ``value``."""
        ndim = -self.particle_dim
        shape = [1] * ndim
        shape[ndim + self.factor_dims[0]] = step.shape[0]
        return step.reshape(*shape, *[1] * self.event_dims[name]) * value

    def kinetic(self, momentum):
        """½‖p‖² per chain and datum."""
        return sum(self._reduce(_sum_event(0.5 * p.pow(2), self.event_dims[n])) for n, p in momentum.items())


def _sum_event(value, event_dim):
    return value.sum(tuple(range(-event_dim, 0))) if event_dim else value
