"""Diagnostics of a fit: of its gradient estimator, and of its posterior against a NUTS reference.

This is the only module that imports ArviZ.

:func:`gradient_variance` measures an engine's gradient *estimator* at the
current parameters, the figure the NVIL and VIMCO papers plot: it draws N
independent estimates on the same batch and reports, per parameter group,

* ``variance``: the per-coordinate variance, averaged over the group's coordinates;
* ``snr``: the signal-to-noise ratio of the group, ‖E g‖ / √(Σ_i Var g_i),
  with ‖E g‖² estimated without the bias that noise adds to the squared norm
  of a mean of N estimates (‖ḡ‖² − Σ_i Var g_i / N, floored at 0), so an
  estimator whose mean is lost in its noise scores near 0, not 1/√N;
* ``mean_norm``: the norm of the mean estimate (the direction being estimated).

::

    stats = gradient_variance("nvil", sbn, x, num_estimates=100)
    stats.groups["guide"].variance, stats.groups["guide"].snr
    plot_gradient_variance({"nvil": stats, "reinforce": reference}, "variance.png")

For the posterior of a fitted guide: :func:`to_inference_data` (guide draws
as ``arviz.InferenceData``), :func:`psis_khat` (is the guide a good proposal
for the posterior?), :func:`nuts_reference` (NUTS on the same program, by
NumPyro through ``pyroapi``) and :func:`compare` (VI against NUTS, a table and
a figure)::

    vi = to_inference_data(schools, (sigma, y))
    psis_khat(schools, (sigma, y)).reading
    compare(vi, nuts_reference(schools.model, sigma, y)).figure.savefig("vi-vs-nuts.png")
"""

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import arviz as az
import numpy as np
import torch
from matplotlib.figure import Figure

from pplgen.posterior import posterior_draws, program_dims
from pplgen.programs import model_and_guide, owning_modules
from pplgen.roles import parameter_roles
from pplgen.training import resolve_engine

GROUPINGS = ("role", "parameter")


class GradientStatistics(NamedTuple):
    """Summary of N gradient estimates of one parameter group (scalar tensors)."""

    variance: torch.Tensor
    snr: torch.Tensor
    mean_norm: torch.Tensor


@dataclass
class GradientVariance:
    """:func:`gradient_variance`'s result: statistics per group, from ``num_estimates`` estimates."""

    engine: str
    num_estimates: int
    groups: dict[str, GradientStatistics]


def gradient_variance(engine, model, data, *, guide=None, num_estimates=100, by="role"):
    """Statistics of ``num_estimates`` gradient estimates of ``engine`` on the batch ``data``.

    :param engine: an engine or a registry name.
    :param model: a model program, or a module with ``.model`` and ``.guide``.
    :param by: ``"role"`` groups parameters as model, guide and helper;
        ``"parameter"`` reports each named parameter of the modules behind the
        programs (``model.``/``guide.`` prefixes where they differ) and of the engine.

    Parameters are left unchanged; engine statistics (running means) are
    frozen while estimating (the engine runs in ``eval()`` mode).
    """
    if not isinstance(num_estimates, int) or num_estimates < 2:
        raise ValueError(f"num_estimates must be an int >= 2 (a variance needs two estimates), got {num_estimates!r}")
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, got {by!r}")
    engine = resolve_engine(engine)
    model, guide = model_and_guide(model, guide)
    probe = engine.check(model, guide, data)
    groups = _groups(probe, engine, model, guide, by)
    was_training = engine.training
    engine.eval()
    try:
        moments = {name: _Moments() for name in groups}
        for _ in range(num_estimates):
            loss = engine(model, guide, data)
            params = [p for group in groups.values() for p in group]
            grads = torch.autograd.grad(loss.surrogate, params, allow_unused=True)
            flat = iter(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))
            for name, group in groups.items():
                moments[name].add(torch.cat([next(flat).flatten() for _ in group]))
    finally:
        engine.train(was_training)
    return GradientVariance(engine.name, num_estimates, {name: m.statistics() for name, m in moments.items()})


def _groups(probe, engine, model, guide, by):
    roles = parameter_roles(probe, model, guide, engine)
    if by == "role":
        return {role: params for role, params in roles.items() if params}
    modules = owning_modules(model, guide)
    prefixes = ["model.", "guide."] if len(modules) == 2 else [""]
    named = {
        **{prefix + n: p for prefix, m in zip(prefixes, modules) for n, p in m.named_parameters() if p.requires_grad},
        **{"param_store." + n: p for n, p in probe.store_params.items()},
        **{"engine." + n: p for n, p in engine.named_parameters()},
    }
    return {name: [p] for name, p in named.items()}


class _Moments:
    """Running mean and sum of squared deviations of a vector (Welford), in float64."""

    def __init__(self):
        self.count, self.mean, self.squares = 0, None, None

    def add(self, value):
        value = value.detach().double()
        self.count += 1
        if self.mean is None:
            self.mean, self.squares = value.clone(), torch.zeros_like(value)
            return
        delta = value - self.mean
        self.mean += delta / self.count
        self.squares += delta * (value - self.mean)

    def statistics(self):
        variance = self.squares / (self.count - 1)
        total = variance.sum()
        signal = (self.mean.pow(2).sum() - total / self.count).clamp(min=0.0).sqrt()
        snr = signal / total.sqrt() if total > 0 else torch.tensor(float("inf") if signal > 0 else 0.0)
        return GradientStatistics(variance.mean(), snr, self.mean.norm())


# --------------------------------------------------------------------------
# Posterior diagnostics with ArviZ: InferenceData, PSIS k̂, a NUTS reference, VI against NUTS
# --------------------------------------------------------------------------

#: Readings of PSIS k̂ (Vehtari et al. 2024; Yao et al. 2018): upper bounds and what they mean.
KHAT_READINGS = ((0.5, "good"), (0.7, "ok"), (math.inf, "unreliable"))


def to_inference_data(fitted, data, *, guide=None, num_samples=1000, coords=None):
    """An ``arviz.InferenceData`` of ``num_samples`` guide draws for the programs' arguments ``data``.

    :param fitted: a :class:`~pplgen.FitResult`, an object with ``.model`` and
        ``.guide``, or a model program (then pass ``guide=``).
    :param data: the programs' arguments: a tuple, or one tensor.
    :param coords: coordinates of named dims, e.g. ``{"school": names}``.

    Groups: ``posterior`` (one chain of guide draws, dims named after the
    plates), ``posterior_predictive`` and ``log_likelihood`` (per observation,
    so ``az.loo`` works), ``observed_data``, and ``sample_stats`` with
    ``log_weight``, the importance log-weight log p(x, z) − log q(z) of each draw.
    """
    model, guide = _fitted_pair(fitted, guide)
    args = data if isinstance(data, tuple) else (data,)
    draws = posterior_draws(model, guide, args, num_samples=num_samples)
    groups = {
        "posterior": _chain(draws.posterior.values),
        "posterior_predictive": _chain(draws.posterior_predictive.values),
        "log_likelihood": _chain(draws.log_likelihood.values),
        "observed_data": {name: value.cpu().numpy() for name, value in draws.observed_data.values.items()},
        "sample_stats": {"log_weight": draws.log_weights.cpu().numpy()[None]},
    }
    dims = {**draws.posterior.dims, **draws.observed_data.dims}
    return az.from_dict(**groups, dims=dims, coords=coords or {}, attrs={"inference_library": "pplgen"})


class PsisResult(NamedTuple):
    """PSIS k̂ of a guide as an importance proposal for the posterior, with its reading.

    ``reading`` is ``"good"`` (k̂ < 0.5: importance-sampled estimates and the
    guide's posterior are reliable), ``"ok"`` (0.5 ≤ k̂ < 0.7: usable, with
    slower convergence) or ``"unreliable"`` (k̂ ≥ 0.7: the guide misses mass
    the posterior has; do not trust its variances).
    """

    khat: float
    reading: str
    num_samples: int


def psis_khat(fitted, data, *, guide=None, num_samples=4000):
    """Pareto-smoothed importance sampling k̂ (Yao et al. 2018) of the guide's log-weights
    log p(x, z) − log q(z) over ``num_samples`` draws; the arguments are those of :func:`to_inference_data`."""
    model, guide = _fitted_pair(fitted, guide)
    args = data if isinstance(data, tuple) else (data,)
    log_weights = posterior_draws(model, guide, args, num_samples=num_samples).log_weights.double().cpu()
    khat = 0.0 if _bounded(log_weights) else float(az.psislw(log_weights.numpy())[1])
    # ArviZ's k̂ is inf (or nan) when the Pareto fit degenerates; such a tail is not trusted.
    reading = next((label for bound, label in KHAT_READINGS if khat < bound), "unreliable")
    return PsisResult(khat, reading, num_samples)


#: Log-weights within this many nats of each other are those of an exact guide up to float error.
EXACT_SPREAD = 1e-3


def _bounded(log_weights):
    """Whether the weights are equal up to :data:`EXACT_SPREAD` (an exact guide, in float32): bounded weights
    have no heavy tail (their Pareto k is at most 0), and the Pareto fit of a near-constant sample degenerates."""
    return bool(torch.isfinite(log_weights).all()) and float(log_weights.max() - log_weights.min()) < EXACT_SPREAD


def nuts_reference(model, *args, num_warmup=1000, num_samples=1000, num_chains=4, seed=0, coords=None, **kwargs):
    """NUTS draws from the posterior of ``model(*args, **kwargs)``, as ``arviz.InferenceData``.

    A program written against ``pyroapi`` runs under NumPyro (tensors are
    passed as arrays; chains vectorized). One that NumPyro cannot run (it
    calls Pyro or torch directly) falls back to Pyro's NUTS, with a warning
    saying why. ``attrs["nuts_backend"]`` and ``attrs["nuts_backend_reason"]``
    record which ran. Dims are named after the program's plates, as in
    :func:`to_inference_data`.
    """
    for name, value in [("num_warmup", num_warmup), ("num_samples", num_samples), ("num_chains", num_chains)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    dims = program_dims(model, args, kwargs)
    reason = _numpyro_obstacle(model, args, kwargs)
    if reason is None:
        data = _numpyro_reference(model, args, kwargs, num_warmup, num_samples, num_chains, seed, dims, coords)
        backend, reason = "numpyro", "the program runs under pyroapi's numpyro backend"
    else:
        warnings.warn(f"nuts_reference: NumPyro cannot run this program ({reason}); using Pyro's NUTS", stacklevel=2)
        data = _pyro_reference(model, args, kwargs, num_warmup, num_samples, num_chains, seed, dims, coords)
        backend = "pyro"
    data.attrs.update(nuts_backend=backend, nuts_backend_reason=reason)
    return data


class Comparison(NamedTuple):
    """``table``: one row per scalar parameter (``pandas.DataFrame``); ``figure``: overlaid marginals."""

    table: object
    figure: object


def compare(vi, reference, *, var_names=None, max_panels=12):
    """Marginals of a variational posterior beside a reference (NUTS) posterior, parameter by parameter.

    :param vi, reference: ``arviz.InferenceData`` with a ``posterior`` group.
    :param var_names: variables to compare (default: those both have).

    The table has, per scalar parameter, mean, sd and the 5/50/95 % quantiles
    of each posterior and the 1-Wasserstein distance between the two marginals
    (in the parameter's units); the figure overlays the marginals of the first
    ``max_panels`` parameters.
    """
    import pandas
    from scipy.stats import wasserstein_distance

    names = var_names or [n for n in vi.posterior.data_vars if n in reference.posterior.data_vars]
    missing = [n for n in names if n not in vi.posterior.data_vars or n not in reference.posterior.data_vars]
    if missing:
        raise ValueError(f"variables {missing} are not in both posteriors; compare only shared ones")
    if not names:
        raise ValueError("the two posteriors share no variable; name them alike, or pass var_names=")
    rows, samples = [], []
    for name in names:
        for label, a, b in _scalar_marginals(vi.posterior[name], reference.posterior[name]):
            rows.append(
                {
                    "parameter": label,
                    **_summary("vi", a),
                    **_summary("nuts", b),
                    "wasserstein": wasserstein_distance(a, b),
                }
            )
            samples.append((label, a, b))
    table = pandas.DataFrame(rows).set_index("parameter")
    panels = samples[:max_panels]
    columns = min(4, len(panels))
    rows_of_panels = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows_of_panels))
    axes = figure.subplots(rows_of_panels, columns, squeeze=False)
    for axis, (label, a, b) in zip(axes.flat, panels):
        bins = np.histogram_bin_edges(np.concatenate([a, b]), bins=40)
        axis.hist(b, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color="0.3", label="NUTS")
        axis.hist(a, bins=bins, density=True, histtype="step", linewidth=1.5, color="C0", label="VI")
        axis.set_title(label, fontsize=9)
        axis.set_yticks([])
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return Comparison(table, figure)


def _fitted_pair(fitted, guide):
    if guide is None and hasattr(fitted, "model") and hasattr(fitted, "guide") and hasattr(fitted, "history"):
        return fitted.model, fitted.guide
    return model_and_guide(fitted, guide)


def _chain(values):
    """One chain: ``(draws, ...)`` tensors as ``(1, draws, ...)`` arrays."""
    return {name: value.detach().cpu().numpy()[None] for name, value in values.items()}


def _summary(prefix, values):
    q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95])
    return {
        f"{prefix}_mean": values.mean(),
        f"{prefix}_sd": values.std(),
        f"{prefix}_q05": q05,
        f"{prefix}_q50": q50,
        f"{prefix}_q95": q95,
    }


def _scalar_marginals(a, b):
    """``(label, draws of a, draws of b)`` for each scalar element of two posterior variables."""
    if a.shape[2:] != b.shape[2:]:
        raise ValueError(f"variable '{a.name}' has shape {a.shape[2:]} in one posterior and {b.shape[2:]} in the other")
    a_values = a.values.reshape(-1, *a.shape[2:])
    b_values = b.values.reshape(-1, *b.shape[2:])
    for index in np.ndindex(*a.shape[2:]):
        label = a.name + (f"[{', '.join(str(i) for i in index)}]" if index else "")
        yield label, a_values[(slice(None), *index)], b_values[(slice(None), *index)]


def _as_arrays(values, numpy_module):
    return tuple(numpy_module.asarray(v.detach().cpu().numpy()) if isinstance(v, torch.Tensor) else v for v in values)


def _numpyro_obstacle(model, args, kwargs):
    """Why NumPyro cannot run the program, or ``None`` if it can (it traces it once to see)."""
    import jax.numpy as jnp
    import numpyro
    from pyroapi import pyro_backend

    try:
        with pyro_backend("numpy"):
            with numpyro.handlers.seed(rng_seed=0):
                trace = numpyro.handlers.trace(model).get_trace(
                    *_as_arrays(args, jnp), **dict(zip(kwargs, _as_arrays(kwargs.values(), jnp)))
                )
    except Exception as error:  # any failure of a foreign program under NumPyro means: use Pyro's NUTS
        return f"running it under NumPyro raised {type(error).__name__}: {error}"
    if not any(site["type"] == "sample" and not site["is_observed"] for site in trace.values()):
        return "NumPyro saw no latent sample site: the program calls pyro directly instead of pyroapi"
    return None


def _numpyro_reference(model, args, kwargs, num_warmup, num_samples, num_chains, seed, dims, coords):
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS
    from pyroapi import pyro_backend

    with pyro_backend("numpy"):
        mcmc = MCMC(
            NUTS(model),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(
            jax.random.PRNGKey(seed), *_as_arrays(args, jnp), **dict(zip(kwargs, _as_arrays(kwargs.values(), jnp)))
        )
    posterior = {name: np.asarray(value) for name, value in mcmc.get_samples(group_by_chain=True).items()}
    return az.from_dict(posterior=posterior, dims=dims, coords=coords or {}, attrs={"inference_library": "numpyro"})


def _pyro_reference(model, args, kwargs, num_warmup, num_samples, num_chains, seed, dims, coords):
    import pyro
    from pyro.infer import MCMC, NUTS

    chains = []
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        mcmc = MCMC(NUTS(model), num_samples=num_samples, warmup_steps=num_warmup, disable_progbar=True)
        mcmc.run(*args, **kwargs)
        chains.append({name: value.detach().cpu().numpy() for name, value in mcmc.get_samples().items()})
    posterior = {name: np.stack([chain[name] for chain in chains]) for name in chains[0]}
    return az.from_dict(posterior=posterior, dims=dims, coords=coords or {}, attrs={"inference_library": "pyro"})
