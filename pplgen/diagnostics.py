"""Diagnostics of a fit, computed on tensors.

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
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch

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
    engine.check(model, guide, data)
    groups = _groups(engine, model, guide, data, by)
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


def _groups(engine, model, guide, data, by):
    roles, store_params = parameter_roles(model, guide, engine, (data,), {})
    if by == "role":
        return {role: params for role, params in roles.items() if params}
    modules = owning_modules(model, guide)
    prefixes = ["model.", "guide."] if len(modules) == 2 else [""]
    named = {
        **{prefix + n: p for prefix, m in zip(prefixes, modules) for n, p in m.named_parameters() if p.requires_grad},
        **{"param_store." + n: p for n, p in store_params.items()},
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
