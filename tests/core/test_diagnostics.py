"""gradient_variance: statistics of an engine's gradient estimates, checked against known cases."""

import matplotlib.pyplot
import numpy as np
import pyro
import pytest
import torch

from pplgen import diagnostics
from pplgen.diagnostics import gradient_variance
from pplgen.inference import get
from pplgen.models import SigmoidBeliefNet
from pplgen.plots import plot_gradient_variance
from tests.support.linear_gaussian import LinearGaussian


def test_the_exact_posterior_gives_stl_a_guide_gradient_of_zero_variance(float64):
    """At q = p(z | x), STL's guide gradient is zero on every draw; the plain ELBO's is not."""
    module = LinearGaussian()
    x = torch.randn(3, 2)
    module.set_exact_posterior()
    stl = gradient_variance(get("svi", stl=True), module, x, num_estimates=20)
    plain = gradient_variance(get("svi"), module, x, num_estimates=20)
    assert stl.groups["guide"].variance < 1e-20 and plain.groups["guide"].variance > 1e-3
    assert set(stl.groups) == {"model", "guide"} and stl.num_estimates == 20


def test_local_signals_lower_the_guide_gradient_variance_only(tmp_path):
    torch.manual_seed(0)
    sbn = SigmoidBeliefNet(layers=(6, 4), observed=12)
    x = torch.rand(20, 12).round()
    reinforce = gradient_variance(
        get("nvil", baseline=None, normalize=False, local_signals=False), sbn, x, num_estimates=50
    )
    local = gradient_variance(get("nvil", baseline=None, normalize=False), sbn, x, num_estimates=50)
    assert local.groups["guide"].variance < reinforce.groups["guide"].variance
    assert torch.allclose(local.groups["model"].variance, reinforce.groups["model"].variance, rtol=0.2)
    plot_gradient_variance({"reinforce": reinforce, "local signals": local}, tmp_path / "variance.png")
    height, width, _ = matplotlib.pyplot.imread(tmp_path / "variance.png").shape
    assert height > 100 and width > 100


def test_groups_by_parameter_name_the_modules_and_the_engine():
    sbn = SigmoidBeliefNet(layers=(4,), observed=12)
    stats = gradient_variance("nvil", sbn, torch.rand(8, 12).round(), num_estimates=3, by="parameter")
    assert {"prior_logits", "recognition.0.weight", "engine.baseline.weight0"} <= set(stats.groups)


@pytest.mark.parametrize(
    "options, message",
    [({"num_estimates": 1}, "num_estimates must be an int >= 2"), ({"by": "layer"}, "by must be one of")],
)
def test_bad_options_are_named(options, message):
    sbn = SigmoidBeliefNet(layers=(4,), observed=12)
    with pytest.raises(ValueError, match=message):
        gradient_variance("nvil", sbn, torch.rand(8, 12).round(), **options)


def test_an_infinite_khat_reads_unreliable(monkeypatch):
    """ArviZ returns k̂ = inf when the log-weights take a handful of values (an exact guide in float32)."""
    monkeypatch.setattr(diagnostics.az, "psislw", lambda log_weights: (log_weights, np.array(np.inf)))
    result = diagnostics.psis_khat(LinearGaussian(), torch.randn(3, 2), num_samples=10)
    assert result.khat == float("inf") and result.reading == "unreliable"


@pytest.mark.parametrize("seed", range(5))
def test_an_exact_guide_reads_good(seed):
    """The guide is the posterior: every log-weight is log p(x) up to float error, which made ArviZ's Pareto
    fit degenerate (k̂ = inf on 2 of these 5 seeds)."""
    model = LinearGaussian()
    model.set_exact_posterior()
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))
    pyro.set_rng_seed(seed)
    result = diagnostics.psis_khat(model, x, num_samples=4000)
    assert result.reading == "good" and result.khat == 0.0, result
