"""Hierarchical priors: eight schools and a multilevel regression, written once for Pyro and NumPyro.

The model programs use only ``pyroapi`` (``from pyroapi import pyro,
distributions as dist``) and operations that torch tensors and JAX arrays
share (arithmetic, indexing, ``.shape``), so the same function runs under
Pyro, where pplgen's engines train a guide for it, and under NumPyro, where
:func:`pplgen.diagnostics.nuts_reference` draws a NUTS reference posterior::

    data = pplgen.data.eight_schools()
    schools = EightSchools("non_centered", guide="full_rank")
    pplgen.fit(schools, "svi", (data.sigma, data.y), steps=5000, optimization={"lr": 0.01})

Their guides are Pyro's autoguides over every latent: ``"mean_field"``
(``AutoNormal``, independent Normals on the unconstrained latents) or
``"full_rank"`` (``AutoMultivariateNormal``, one correlated Gaussian). Their
constants are Python floats, which both backends accept; these small models
are meant for the CPU.
"""

from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.nn import PyroModule
from pyroapi import distributions as dist
from pyroapi import pyro

GUIDES = {"mean_field": AutoNormal, "full_rank": AutoMultivariateNormal}
PARAMETERIZATIONS = ("centered", "non_centered")


def centered_eight_schools(sigma, y=None):
    """μ ~ N(0, 5²), τ ~ HalfCauchy(5), θ_j ~ N(μ, τ²), y_j ~ N(θ_j, σ_j²) (Rubin 1981)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", sigma.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def non_centered_eight_schools(sigma, y=None):
    """The same model with θ_j = μ + τ θ̃_j, θ̃_j ~ N(0, 1): no funnel between τ and the θ_j."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", sigma.shape[0]):
        theta_t = pyro.sample("theta_t", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_t, sigma), obs=y)


def varying_intercepts_and_slopes(days, subject, num_subjects, reaction=None):
    """Reaction time of subject j on day d: (α + a_j) + (β + b_j) d + noise, with (a_j, b_j) drawn from a
    zero-mean Gaussian whose scales and LKJ(2)-distributed correlation are learned (lme4's
    ``Reaction ~ Days + (Days | Subject)``, Bayesian). The group effects are non-centred,
    (a_j, b_j) = diag(s) L u_j with u_j ~ N(0, I), so neither NUTS nor a Gaussian guide meets a funnel."""
    intercept = pyro.sample("intercept", dist.Normal(250.0, 50.0))
    slope = pyro.sample("slope", dist.Normal(10.0, 10.0))
    group_scale = pyro.sample("group_scale", dist.HalfNormal(25.0).expand([2]).to_event(1))
    correlation = pyro.sample("correlation", dist.LKJCholesky(2, 2.0))
    scale_tril = group_scale[..., None] * correlation
    with pyro.plate("subject", num_subjects):
        standardized = pyro.sample("standardized_effects", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    effects = (standardized[..., None, :] * scale_tril).sum(-1)
    noise = pyro.sample("noise", dist.HalfNormal(50.0))
    mean = intercept + effects[..., subject, 0] + (slope + effects[..., subject, 1]) * days
    with pyro.plate("observation", days.shape[0]):
        pyro.sample("reaction", dist.Normal(mean, noise), obs=reaction)


class _WithAutoguide(PyroModule):
    """A pyroapi model function as ``.model`` and an autoguide over it as ``.guide``."""

    def __init__(self, model, guide):
        super().__init__()
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {sorted(GUIDES)}, got {guide!r}")
        self.model = model
        self.guide_kind = guide
        self.guide = GUIDES[guide](model)


class EightSchools(_WithAutoguide):
    """Eight schools: ``.model(sigma, y)`` in the ``"centered"`` or ``"non_centered"``
    parameterization, ``.guide`` ``"mean_field"`` or ``"full_rank"``."""

    def __init__(self, parameterization="non_centered", guide="full_rank"):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        model = centered_eight_schools if parameterization == "centered" else non_centered_eight_schools
        super().__init__(model, guide)
        self.parameterization = parameterization


class MultilevelRegression(_WithAutoguide):
    """Varying intercepts and slopes with correlated group effects:
    ``.model(days, subject, num_subjects, reaction)``, guide ``"full_rank"`` or ``"mean_field"``."""

    def __init__(self, guide="full_rank"):
        super().__init__(varying_intercepts_and_slopes, guide)
