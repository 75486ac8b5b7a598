"""pplgen's engines against Pyro's own estimators of the same expected gradient, on the catalogue's shapes.

For each pair (engine, Pyro estimator) and program, the mean gradient over
``REPLICATES`` independent estimates is computed by both, from the same
parameters; every coordinate must agree within 5 standard errors of the
difference of the means (plus 1e-5 for coordinates both estimate as zero).
Seeds are fixed, so the outcome is deterministic; ``pytest -s`` prints the
largest difference of each comparison. The pairs share an
expectation by construction:

* svi and ``Trace_ELBO``: ∇ ELBO by the reparameterized path;
* nvil without baseline or normalization and ``TraceGraph_ELBO``: ∇ ELBO,
  pplgen by score functions with local signals, Pyro by its own mix of path
  and score terms;
* iwae and ``RenyiELBO(alpha=0)``: ∇ of the K-sample bound, on programs
  with no plate around every site (Pyro weighs the whole program at once,
  pplgen each plate element of a plate shared by all sites);
* rws's model update and ``ReweightedWakeSleep``'s wake-θ loss: Σ_k w̃_k ∇θ log p,
  on the same programs as iwae.

Pyro's TraceGraph_ELBO, RenyiELBO and ReweightedWakeSleep differentiate
inside ``loss_and_grads``; their surrogates are taken from the functions it
calls (or, for RenyiELBO, from the gradients it leaves).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceGraph_ELBO

from pplgen.inference import get
from pplgen.roles import parameter_roles
from tests.support.programs import PROGRAMS

REPLICATES = 200
TOLERANCE_SE = 5.0
BY_NAME = {entry.name: entry for entry in PROGRAMS}

SVI_SHAPES = [
    "vae_local_latents",
    "nested_plates",
    "sparse_gamma_siblings",
    "sibling_plates_same_size",
    "plate_stack",
    "sequential_plate_subsampled",
    "vectorized_subsample",
    "subsample_with_global",
    "broadcast_mask_nested",
    "tensor_scale_in_plate",
    "kl_annealing",
    "factor_in_model",
    "markov_time_series",
    "ordered_logistic_obs",
]
NVIL_SHAPES = [
    "mixed_discrete_continuous",
    "sigmoid_belief_layer",
    "gaussian_mixture",
    "sparse_gamma_siblings",
    "sibling_plates_same_size",
    "vectorized_subsample",
    "subsample_with_global",
    "tensor_scale_in_plate",
]
#: Programs with no plate around every site and one scale: both weigh the whole program at once.
JOINT_SHAPES = [
    "global_and_local_latents",
    "sibling_plates_same_size",
    "plate_reuse",
    "tensor_mask_in_plate",
    "multivariate_normal_obs",
    "ordered_logistic_obs",
    "factor_in_model",
    "global_discrete_and_local",
    "sibling_plates_learned_priors",
    "global_scale_and_local_means",
]
#: The joint shapes whose model has parameters (θ is what the two estimators share).
RWS_SHAPES = [
    "multivariate_normal_obs",
    "ordered_logistic_obs",
    "global_discrete_and_local",
    "sibling_plates_learned_priors",
    "global_scale_and_local_means",
]


def global_discrete_and_local():
    """A global Bernoulli switch and a local Normal latent per datum: discrete and continuous, one factor."""
    x = torch.tensor([0.3, 2.1, 1.4, -0.2])

    def model(x):
        on = pyro.sample(
            "on", dist.Bernoulli(pyro.param("prior_on", torch.tensor(0.4), constraint=dist.constraints.unit_interval))
        )
        shift = pyro.param("shift", torch.tensor(1.5))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(pyro.param("mu", torch.tensor(0.2)), 1.0))
            pyro.sample("x", dist.Normal(z + on * shift, 0.7), obs=x)

    def guide(x):
        pyro.sample(
            "on", dist.Bernoulli(pyro.param("q_on", torch.tensor(0.6), constraint=dist.constraints.unit_interval))
        )
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(len(x))), 0.8))

    return model, guide, (x,), {}


def sibling_plates_learned_priors():
    """Sibling plates of sizes 3 and 4 that reuse dim -1, each with a learned prior mean."""
    xa, xb = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.1, -0.4, 0.9])

    def model(xa, xb):
        with pyro.plate("a_plate", 3, dim=-1):
            a = pyro.sample("a", dist.Normal(pyro.param("mean_a", torch.tensor(0.3)), 1.0))
            pyro.sample("xa", dist.Normal(a, 0.5), obs=xa)
        with pyro.plate("b_plate", 4, dim=-1):
            b = pyro.sample("b", dist.Normal(pyro.param("mean_b", torch.tensor(-0.2)), 1.0))
            pyro.sample("xb", dist.Normal(b, 0.5), obs=xb)

    def guide(xa, xb):
        with pyro.plate("a_plate", 3, dim=-1):
            pyro.sample("a", dist.Normal(pyro.param("a_loc", torch.zeros(3)), 0.7))
        with pyro.plate("b_plate", 4, dim=-1):
            pyro.sample("b", dist.Normal(pyro.param("b_loc", torch.zeros(4)), 0.7))

    return model, guide, (xa, xb), {}


def global_scale_and_local_means():
    """A global LogNormal scale and local means in a data plate: a hierarchical prior with learned hyperparameters."""
    x = torch.tensor([0.4, -1.2, 2.2, 0.8, 0.0])

    def model(x):
        spread = pyro.sample("spread", dist.LogNormal(pyro.param("log_spread_loc", torch.tensor(0.1)), 0.5))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(pyro.param("mu", torch.tensor(0.3)), spread))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("spread", dist.LogNormal(pyro.param("q_spread", torch.tensor(0.0)), 0.3))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(len(x))), 0.8))

    return model, guide, (x,), {}


LOCAL_PROGRAMS = {
    "global_discrete_and_local": global_discrete_and_local,
    "sibling_plates_learned_priors": sibling_plates_learned_priors,
    "global_scale_and_local_means": global_scale_and_local_means,
}


def build(name):
    if name in LOCAL_PROGRAMS:
        return LOCAL_PROGRAMS[name]()
    return BY_NAME[name].build()


def mean_gradients(estimate, params, seed):
    """Mean and standard error of ``estimate()``'s gradient in ``params`` over the replicates."""
    pyro.set_rng_seed(seed)
    samples = []
    for _ in range(REPLICATES):
        value = estimate()
        grads = torch.autograd.grad(value, params, allow_unused=True) if value.requires_grad else [None] * len(params)
        samples.append(
            torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten() for p, g in zip(params, grads)])
        )
    samples = torch.stack(samples).double()
    return samples.mean(0), samples.std(0) / REPLICATES**0.5


def assert_same_expectation(ours, theirs):
    """Every coordinate within the tolerance; returns the largest |difference| in standard errors."""
    (mean_a, se_a), (mean_b, se_b) = ours, theirs
    bound = TOLERANCE_SE * (se_a**2 + se_b**2).sqrt() + 1e-5
    worst = ((mean_a - mean_b).abs() / bound).max()
    assert worst <= 1.0, f"means differ by {worst:.2f}× the allowed {TOLERANCE_SE} SE\nours   {mean_a}\ntheirs {mean_b}"
    return TOLERANCE_SE * worst.item()


def setup(name, engine):
    model, guide, args, kwargs = build(name)
    probe = engine.check(model, guide, *args, **kwargs)
    roles = parameter_roles(probe, model, guide, engine)
    return model, guide, args, kwargs, roles


def compare(name, engine, pyro_loss, *, role=None, seed=0):
    model, guide, args, kwargs, roles = setup(name, engine)
    params = roles[role] if role else roles["model"] + roles["guide"]
    if not params:
        pytest.skip(f"{name} has no {role or 'model or guide'} parameter")
    ours = mean_gradients(lambda: engine(model, guide, *args, **kwargs).surrogate, params, seed)
    theirs = mean_gradients(lambda: pyro_loss(model, guide, *args, **kwargs), params, seed + 1)
    worst = assert_same_expectation(ours, theirs)
    # Shown with ``pytest -s``: how close the two estimators came.
    print(f"{engine.name} {name}: largest difference {worst:.2f} SE over {len(ours[0])} coordinates")


@pytest.mark.parametrize("name", SVI_SHAPES)
def test_svi_matches_trace_elbo(name):
    compare(name, get("svi"), Trace_ELBO().differentiable_loss)


@pytest.mark.parametrize("name", NVIL_SHAPES)
def test_nvil_without_baseline_matches_tracegraph_elbo(name):
    engine = get("nvil", baseline=None, normalize=False)
    compare(name, engine, lambda *a, **k: _tracegraph_surrogate(*a, **k))


def _tracegraph_surrogate(model, guide, *args, **kwargs):
    """TraceGraph_ELBO's surrogate loss (its ``loss_and_grads`` differentiates this)."""
    elbo = TraceGraph_ELBO()
    (model_trace, guide_trace), *_ = elbo._get_traces(model, guide, args, kwargs)
    from pyro.infer.tracegraph_elbo import _compute_elbo

    return _compute_elbo(model_trace, guide_trace)[1]


@pytest.mark.parametrize("name", [n for n in JOINT_SHAPES if n != "global_discrete_and_local"])
def test_iwae_matches_renyi_elbo_at_alpha_zero(name):
    pyro_bound = RenyiELBO(alpha=0.0, num_particles=3, vectorize_particles=True)
    compare(name, get("iwae", num_particles=3), lambda *a, **k: _renyi_surrogate(pyro_bound, *a, **k))


def _renyi_surrogate(elbo, model, guide, *args, **kwargs):
    """RenyiELBO's differentiable surrogate: it backpropagates inside ``loss_and_grads``, so collect its gradient."""
    params = [p.unconstrained() for p in pyro.get_param_store().values()]
    before = [p.grad for p in params]
    for p in params:
        p.grad = None
    elbo.loss_and_grads(model, guide, *args, **kwargs)
    surrogate = sum((p * p.grad).sum() for p in params if p.grad is not None)
    for p, grad in zip(params, before):
        p.grad = grad
    return surrogate


@pytest.mark.parametrize("name", RWS_SHAPES)
def test_rws_model_update_matches_reweighted_wake_sleep(name):
    pyro_rws = ReweightedWakeSleep(num_particles=3, vectorize_particles=True, insomnia=1.0)
    compare(
        name,
        get("rws", num_particles=3),
        lambda model, guide, *a, **k: pyro_rws._loss(model, guide, a, k)[0],
        role="model",
    )


def test_a_wrong_estimator_fails_the_comparison():
    """The comparison has power: svi with the guide's entropy term dropped disagrees with Trace_ELBO."""
    model, guide, args, kwargs = build("vae_local_latents")
    engine = get("svi")
    probe = engine.check(model, guide, *args, **kwargs)
    params = parameter_roles(probe, model, guide, engine)["guide"]

    def without_entropy():
        particles = engine.particles(model, guide, args, kwargs)
        return -sum((s["scale"] * s["fn"].log_prob(s["value"])).sum() for s in particles.sites(particles.model_trace))

    ours = mean_gradients(without_entropy, params, 0)
    theirs = mean_gradients(lambda: Trace_ELBO().differentiable_loss(model, guide, *args, **kwargs), params, 1)
    with pytest.raises(AssertionError, match="SE"):
        assert_same_expectation(ours, theirs)
