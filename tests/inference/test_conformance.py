"""The engine contract, on every configuration of the conformance table (:mod:`tests.support.outcomes`).

Every configuration runs the same checks on the VAE and on the linear-Gaussian
model; a guide-free engine (gan) runs the model alone, with a Gaussian
likelihood for the VAE (its dreams must be differentiable).
"""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pplgen import UnsupportedModelError
from pplgen.inference import ENGINES, get
from pplgen.models import VAE, SigmoidBeliefNet
from tests.support.cases import hierarchical_guide_pair
from tests.support.linear_gaussian import LinearGaussian
from tests.support.outcomes import configurations

ROWS = configurations()
IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in ROWS]


def vae_case(engine):
    torch.manual_seed(0)
    if engine.binary_latents_only or engine.discrete_latents_only:
        return SigmoidBeliefNet(layers=(3,), observed=12), torch.rand(5, 12).bernoulli()
    if not engine.needs_guide:
        return VAE(data_dim=12, latent_dim=3, hidden=(8,), likelihood="gaussian"), torch.rand(5, 12)
    return VAE(data_dim=12, latent_dim=3, hidden=(8,)), torch.rand(5, 12).bernoulli()


def linear_gaussian_case(engine):
    if engine.binary_latents_only or engine.discrete_latents_only:
        pytest.skip(f"{engine.name} trains binary latents only; the VAE case is a sigmoid belief net for it")
    return LinearGaussian(), torch.randn(4, 2)


def trained(module, engine, x):
    """The parameters ``engine`` trains: all of ``module``'s, or for a guide-free engine those the model's
    log-density reaches."""
    params = list(module.parameters())
    if engine.needs_guide:
        return params
    with poutine.block():
        log_density = poutine.trace(module.model).get_trace(x).log_prob_sum()
    reached = torch.autograd.grad(log_density, params, allow_unused=True)
    return [p for p, grad in zip(params, reached) if grad is not None]


@pytest.mark.parametrize("case", [vae_case, linear_gaussian_case], ids=["vae", "linear_gaussian"])
@pytest.mark.parametrize("name, options", ROWS, ids=IDS)
def test_engine_contract(name, options, case):
    engine = get(name, **options)
    module, x = case(engine)
    guide = module.guide if engine.needs_guide else None
    engine.check(module.model, guide, x)
    loss = engine(module.model, guide, x)
    assert loss.surrogate.shape == () and torch.isfinite(loss.surrogate)
    assert set(loss.metrics) == set(engine.metric_names) and "loss" in loss.metrics
    assert all(v.shape == () and not v.requires_grad for v in loss.metrics.values())
    assert torch.allclose(loss.metrics["loss"], loss.surrogate.detach())
    params = trained(module, engine, x)
    loss.surrogate.backward()
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("name, options", ROWS, ids=IDS)
def test_state_dict_round_trip_and_move(name, options):
    engine = get(name, **options)
    module, x = vae_case(engine)
    guide = module.guide if engine.needs_guide else None
    engine(module.model, guide, x)
    restored = get(name, **options)
    restored.load_state_dict(copy.deepcopy(engine.state_dict()))
    for key, value in engine.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])
    loose = [f"{type(m).__name__}.{k}" for m in engine.modules() for k, v in vars(m).items() if torch.is_tensor(v)]
    assert not loose, f"tensors held outside parameters and buffers, which .to() does not move: {loose}"
    before = floating_state(module, engine)
    assert all(t.dtype == torch.float32 for t in before.values())
    module.to(torch.float64)
    engine.to(torch.float64)
    after = floating_state(module, engine)
    assert after.keys() == before.keys()
    assert [k for k, t in after.items() if t.dtype != torch.float64] == []
    loss = engine(module.model, guide, x.double())
    assert loss.surrogate.dtype == torch.float64 and torch.isfinite(loss.surrogate)


def floating_state(module, engine):
    """Every floating-point parameter and buffer (persistent or not) of the program's module and the engine."""
    return {
        f"{owner}.{name}": t
        for owner, m in [("module", module), ("engine", engine)]
        for name, t in [*m.named_parameters(), *m.named_buffers()]
        if t.is_floating_point()
    }


def discrete_guide_pair():
    def model(x):
        with pyro.plate("data", len(x)):
            h = pyro.sample("h1", dist.Bernoulli(x.new_full((3,), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(h.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x):
        probs = pyro.param("probs", torch.full((3,), 0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", len(x)):
            pyro.sample("h1", dist.Bernoulli(probs).to_event(1))

    return model, guide, torch.randn(4, 1)


@pytest.mark.parametrize(
    "name, options",
    [
        row
        for row in ROWS
        if ENGINES[row[0]].needs_guide and ENGINES[row[0]].requires_rsample and not ENGINES[row[0]].relaxes_discrete
    ],
    ids=str,
)
def test_reparameterized_engines_refuse_discrete_guide_sites(name, options):
    model, guide, x = discrete_guide_pair()
    with pytest.raises(UnsupportedModelError, match=rf"site 'h1' is a Bernoulli and has no rsample: {name} cannot"):
        get(name, **options).check(model, guide, x)


@pytest.mark.parametrize(
    "name, options, flag",
    [("svi", {"stl": True}, "stl=True"), ("iwae", {"estimator": "dreg"}, "estimator='dreg'")],
)
def test_detached_guide_estimators_refuse_dependent_guide_sites(name, options, flag):
    model, guide, x = hierarchical_guide_pair()
    get(name).check(model, guide, x)
    with pytest.raises(
        UnsupportedModelError, match=rf"site 'z2': its guide distribution depends on latent 'z1'.*{flag}"
    ):
        get(name, **options).check(model, guide, x)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("svi", {"num_particles": 0}, "num_particles must be a positive int"),
        ("svi", {"stl": True, "analytic_kl": True}, "analytic_kl and stl cannot be combined"),
        ("iwae", {"estimator": "doubly"}, "estimator must be one of"),
        ("iwae", {"max_plate_nesting": -1}, "max_plate_nesting must be"),
        ("vimco2", {}, "unknown engine .vimco2.; registered engines: "),
        ("vimco", {"num_particles": 1}, "vimco needs num_particles >= 2"),
        ("rws", {"phi": "dream"}, "phi must be one of"),
        ("rws", {"data_arguments": ["x"]}, "data_arguments must map observed site names"),
        ("wake_sleep", {"data_arguments": {"x": 1.5}}, "data_arguments must map observed site names"),
        ("nvil", {"baseline": 100}, "baseline must be a sequence of hidden layer sizes"),
        ("nvil", {"decay": 1.0}, "decay must be in"),
        ("avb", {"discriminator": 64}, "discriminator must be a sequence of hidden layer sizes"),
        ("avb", {"discriminator_steps": 0}, "discriminator_steps must be a positive int"),
        ("avb", {"adaptive_contrast": True}, "adaptive_contrast needs num_particles >= 2"),
    ],
)
def test_bad_options_are_named(name, options, message):
    with pytest.raises(ValueError, match=message):
        get(name, **options)
