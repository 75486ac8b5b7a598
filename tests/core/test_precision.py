"""Mixed precision: log-densities summed in float32 under autocast, and a bf16-mixed fit as good as float32."""

import pyro
import pytest
import torch

import pplgen
from pplgen.inference import ENGINES
from pplgen.models import VAE
from pplgen.particles import site_log_prob
from tests.support.cases import small_case


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_sums_its_terms_in_float32_under_bf16_autocast(name):
    """Under ``torch.autocast(bfloat16)`` the networks compute in bf16, yet the surrogate and every metric are
    float32: log-densities, log-weights, log-sum-exp and leave-one-out terms are never summed in bf16."""
    pair, engine, x = small_case(name)
    engine.check(pair.model, pair.guide, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = engine(pair.model, pair.guide, x)
    assert loss.surrogate.dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in loss.metrics.values())
    loss.surrogate.backward()


def test_a_site_log_prob_is_float32_from_bf16_parameters():
    logits = torch.randn(4, 784).bfloat16()
    site = {
        "name": "x",
        "fn": pyro.distributions.Bernoulli(logits=logits).to_event(1),
        "value": torch.ones(4, 784),
        "mask": None,
        "scale": 1.0,
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_prob = site_log_prob(site)
    expected = pyro.distributions.Bernoulli(logits=logits.float()).to_event(1).log_prob(torch.ones(4, 784))
    assert log_prob.dtype == torch.float32
    torch.testing.assert_close(log_prob, expected)


@pytest.mark.parametrize(
    "fn, value",
    [
        (pyro.distributions.Delta(torch.randn(3, 2).bfloat16(), event_dim=1), None),
        (pyro.distributions.LKJCholesky(3, torch.tensor(2.0).bfloat16()), torch.eye(3)),
    ],
    ids=["delta_event_dim", "lkj_cholesky"],
)
def test_distributions_not_rebuilt_from_their_parameters_keep_their_density_under_autocast(fn, value):
    """A Delta's event_dim and LKJCholesky's dim are not parameters: such sites keep their own density, cast."""
    value = fn.v.float() if value is None else value
    site = {"name": "s", "fn": fn, "value": value, "mask": None, "scale": 1.0}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_prob = site_log_prob(site)
    assert log_prob.dtype == torch.float32 and log_prob.shape == fn.batch_shape


def test_a_bf16_mixed_vae_fit_is_within_one_nat_of_float32():
    """The same VAE (784-200-10), seed and budget (2,000 real digits, 5 epochs of svi), in float32 and in
    bf16-mixed: held-out log-likelihoods (300 test digits, K=200) within 1 nat (measured: −184.09 and
    −183.97)."""
    x = pplgen.data.load("mnist", split="train", binarize="threshold")[:2000]
    x_test = pplgen.data.load("mnist", split="test", binarize="threshold")[:300]
    scores = {}
    for precision in ("32-true", "bf16-mixed"):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE(latent_dim=10, hidden=(200,))
        result = pplgen.fit(
            vae,
            "svi",
            x,
            epochs=5,
            execution=pplgen.Execution(accelerator="cpu", precision=precision),
            evaluation=pplgen.Evaluation(x_test, samples=200),
        )
        scores[precision] = result.evaluations[-1]["log_likelihood"]
    assert abs(scores["bf16-mixed"] - scores["32-true"]) < 1.0
