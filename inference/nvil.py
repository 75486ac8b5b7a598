"""``nvil``: neural variational inference and learning, score-function gradients with control variates.

Mnih & Gregor (2014), "Neural Variational Inference and Learning in Belief
Networks". With z ~ q_φ(z | x) drawn without a path derivative and the
learning signal l(x, z) = log p_θ(x, z) − log q_φ(z | x)::

    ∇φ ELBO = E_q[(l(x, z) − b) ∇φ log q_φ(z | x)]       for any b not depending on z

θ gets ∇θ log p_θ(x, z). For each guide site s (a layer of a layered guide)
the signal is

    l_s = (l_s^local − c_s − C_ψ(x)_s) / max(1, √v_s)

* ``local_signals``: l_s^local keeps only the terms of log p − log q that z_s
  or the latents drawn from it can move (found by autograd, see
  :mod:`pplgen.dependencies`); the others have zero covariance with its score.
* ``baseline``: C_ψ(x), a tanh MLP of the observed data with one output per
  guide site (a :class:`~pplgen.nn.LazyMLP`, sized by the program), owned by this engine and fitted by squared error to
  l_s^local − c_s inside the same surrogate (ψ gets only that gradient).
  A program whose site set changes from batch to batch (a label observed on
  some batches and drawn on others) gets a baseline and statistics per site
  set, each built when its site set first appears.
* ``normalize``: c_s and v_s are running mean and variance of
  l_s^local − C_ψ(x)_s (buffers, momentum ``decay``), so the signal is
  centred and its scale kept near 1. Both are frozen in ``eval()`` mode.

A guide site may bring its own baseline, as Pyro's ``TraceGraph_ELBO`` reads
it from ``infer={"baseline": {...}}``: ``nn_baseline`` (a module, applied to
``nn_baseline_input``, its parameters trained by the same squared error),
``baseline_value`` (a tensor whose graph reaches the user's baseline
parameters), and ``use_decaying_avg_baseline`` with ``baseline_beta`` (a
running average of the site's cost, a buffer of this engine). They are in
Pyro's units, the cost −l_s, and replace C_ψ(x)_s for that site; the running
statistics still centre and scale the signal when ``normalize``.

None of these changes the expected direction of ∇φ: the baseline and c_s
do not depend on z, and the division rescales it by a positive constant.
With ``baseline=None, normalize=False, local_signals=False`` the engine is
plain REINFORCE.

Cost per step: one guide pass and one model pass over K × batch particles,
plus the baseline MLP; the first call traces the program once more to find
the local signals.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200, 200))
    engine = pplgen.inference.get("nvil", baseline=(100,))
    loss = engine(sbn.model, sbn.guide, x)

Metrics: ``loss`` (−ELBO of the batch), ``elbo``, ``baseline_loss``
(the baseline's squared error, summed over batch and sites).
"""

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer

from pplgen.checks import UnsupportedModelError, check_has_latents
from pplgen.dependencies import downstream_sites
from pplgen.distributed import all_reduce_sum_, broadcast_
from pplgen.engine import Loss, ParticleEngine
from pplgen.nn import LazyMLP
from pplgen.particles import observed_features, site_log_densities, site_log_prob
from pplgen.sampling import DETACHED, LEAVES


class NVIL(ParticleEngine):
    name = "nvil"
    metric_names = ("loss", "elbo", "baseline_loss")
    requires_rsample = False

    def __init__(
        self,
        num_particles=1,
        *,
        baseline=(100,),
        normalize=True,
        local_signals=True,
        decay=0.8,
        max_plate_nesting=None,
    ):
        super().__init__(num_particles, max_plate_nesting)
        if baseline is not None and not (
            isinstance(baseline, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in baseline)
        ):
            raise ValueError(
                f"baseline must be a sequence of hidden layer sizes (e.g. (100,)) or None, got {baseline!r}"
            )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.baseline = LazyMLP(baseline, owner="nvil's baseline") if baseline is not None else None
        self.moments = RunningMoments(decay) if normalize else None
        #: The baselines and statistics of site sets met after the plan's, by ``"<features>x<sites>"``.
        self.other_site_sets = nn.ModuleDict()
        #: The running average cost of each guide site asking for ``use_decaying_avg_baseline``, by site name.
        self.site_averages = nn.ModuleDict()
        self.local_signals = bool(local_signals)
        self.decay = float(decay)
        self._downstream = None

    def forward(self, model, guide, *args, **kwargs):
        # Local signals read dependencies off the latents, so they are drawn as leaves that require grad.
        particles = self.particles(model, guide, args, kwargs, drawing=LEAVES if self.local_signals else DETACHED)
        model_terms = site_log_densities(particles, particles.model_trace, scaled=True)
        guide_terms = site_log_densities(particles, particles.guide_trace, scaled=True)
        scores = _scores(particles)
        log_p = sum(model_terms.values(), particles.zeros())
        elbo = (log_p - sum(guide_terms.values(), particles.zeros())).sum() / particles.num_particles

        signals = torch.stack(self._signals(particles, model_terms, guide_terms, scores)).detach()
        centred, baseline_loss = self._centre(signals, particles)
        score = sum(s * q for s, q in zip(centred, scores.values()))
        estimator = (log_p + score).sum() / particles.num_particles
        surrogate = -elbo.detach() - (estimator - estimator.detach()) + (baseline_loss - baseline_loss.detach())
        return Loss(surrogate, {"loss": -elbo.detach(), "elbo": elbo.detach(), "baseline_loss": baseline_loss.detach()})

    def _signals(self, particles, model_terms, guide_terms, scores):
        """One learning signal per guide latent, each ``(K, *factor_sizes)``: scaled log p − log q terms."""
        total = sum(model_terms.values(), particles.zeros()) - sum(guide_terms.values(), particles.zeros())
        if not self.local_signals:
            return [total] * len(scores)
        downstream = self._downstream_sites(particles, (tuple(model_terms), tuple(scores)))
        zeros = particles.zeros()
        return [
            sum((model_terms[n] for n in downstream.model[s]), zeros)
            - sum((guide_terms[n] for n in downstream.guide[s]), zeros)
            for s in scores
        ]

    def _downstream_sites(self, particles, structure):
        """Kept per program structure (its site names); found from this step's leaves when the structure is new."""
        if self._downstream is None or self._downstream[0] != structure:
            self._downstream = (structure, downstream_sites(particles))
        return self._downstream[1]

    def _centre(self, signals, particles):
        """Signals minus baseline and running mean, over the running std; and the baseline's loss.

        ``signals`` has shape ``(sites, K, *factor_sizes)``.
        """
        features = _baseline_input(particles, signals) if self.baseline is not None else None
        network, moments = self._helpers_for(features, signals)
        if network is not None:
            baseline = network(features, signals.shape[0]).movedim(-1, 0).unsqueeze(1)
        else:
            baseline = torch.zeros((), dtype=signals.dtype, device=signals.device)
        own = self._own_baselines(particles, signals)
        if own:
            rows = list(baseline.expand_as(signals).unbind(0))
            for index, value in own.items():
                rows[index] = value.expand_as(signals[index])
            baseline = torch.stack(rows)
        residual = signals - baseline.detach()
        mean, std = moments(residual) if moments is not None else (0.0, 1.0)
        baseline_loss = (signals - mean - baseline).pow(2).sum() / particles.num_particles
        return (residual - mean) / std, baseline_loss

    def _own_baselines(self, particles, signals):
        """``{row of signals: baseline}`` for the guide sites that bring their own (Pyro's
        ``infer={"baseline": ...}``), in learning-signal units: the negative of Pyro's baseline of the cost."""
        own = {}
        for index, site in enumerate(particles.sites(particles.guide_trace, observed=False)):
            options = baseline_options(site)
            if options is None:
                continue
            cost_baseline = torch.zeros((), dtype=signals.dtype, device=signals.device)
            if options["use_decaying_avg_baseline"]:
                key = _module_key(site["name"])
                if key not in self.site_averages:
                    self.site_averages[key] = DecayingAverage().to(signals.device)
                cost_baseline = cost_baseline + self.site_averages[key](-signals[index], options["baseline_beta"])
            if options["nn_baseline"] is not None:
                cost_baseline = cost_baseline + options["nn_baseline"](options["nn_baseline_input"].detach())
            elif options["baseline_value"] is not None:
                cost_baseline = cost_baseline + options["baseline_value"]
            own[index] = -_shaped_like(cost_baseline, signals[index], site["name"])
        return own

    def _helpers_for(self, features, signals):
        """The baseline and statistics of this site set: the plan's, or those built (and, with several processes,
        made alike on every rank) when the site set first appeared."""
        if self.baseline is None and self.moments is None:
            return None, None
        sizes = (0 if features is None else features.shape[-1], signals.shape[0])
        if _built_for(self.baseline, self.moments) in (None, sizes):
            return self.baseline, self.moments
        key = f"{sizes[0]}x{sizes[1]}"
        if key not in self.other_site_sets:
            helpers = self._new_site_set(key)
            if helpers.baseline is not None:
                helpers.baseline.initialize_parameters(features, signals.shape[0])
            if helpers.moments is not None:
                helpers.moments.initialize_parameters(signals)
            broadcast_([*helpers.parameters(), *helpers.buffers()])
        helpers = self.other_site_sets[key]
        return helpers.baseline, helpers.moments

    def _new_site_set(self, key):
        helpers = SiteSetHelpers(
            LazyMLP(self.baseline.hidden, owner="nvil's baseline") if self.baseline is not None else None,
            RunningMoments(self.decay) if self.moments is not None else None,
        )
        self.other_site_sets[key] = helpers
        return helpers

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Builds, unsized, the helpers of every site set ``state_dict`` holds, then loads it."""
        for name in state_dict:
            if name.startswith("other_site_sets."):
                key = name.split(".")[1]
                if key not in self.other_site_sets:
                    self._new_site_set(key)
            if name.startswith("site_averages."):
                key = name.split(".")[1]
                if key not in self.site_averages:
                    self.site_averages[key] = DecayingAverage()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def needs_vectorized_particles(self):
        return "local_signals=True" if self.local_signals else None

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        check_has_latents(probe, self.name)
        if self.baseline is not None:
            _baseline_input(probe.particles, torch.stack(list(_scores(probe.particles).values())).detach())
        return probe

    def adopt(self, probe, args, kwargs):
        """Builds the baseline and the running statistics for this program (their sizes are its sizes)."""
        scores = _scores(probe.particles)
        signals = torch.stack(list(scores.values())).detach()
        if self.baseline is not None:
            self.baseline.initialize_parameters(_baseline_input(probe.particles, signals), signals.shape[0])
        if self.moments is not None:
            self.moments.initialize_parameters(signals)
        if self.local_signals:
            structure = (tuple(site_log_densities(probe.particles, probe.model_trace)), tuple(scores))
            self._downstream = (structure, probe.downstream)

    def options(self):
        return {
            **super().options(),
            "baseline": None if self.baseline is None else self.baseline.hidden,
            "normalize": self.moments is not None,
            "local_signals": self.local_signals,
            "decay": self.decay,
        }


#: Pyro's baseline options of a guide site (``TraceGraph_ELBO``'s names and defaults).
BASELINE_OPTIONS = {
    "nn_baseline": None,
    "nn_baseline_input": None,
    "use_decaying_avg_baseline": False,
    "baseline_beta": 0.90,
    "baseline_value": None,
}


def baseline_options(site):
    """The site's ``infer["baseline"]`` with Pyro's defaults filled in, or None when it asks for none; an
    unknown option or an incomplete one is refused by name."""
    given = site["infer"].get("baseline")
    if not given:
        return None
    unknown = sorted(set(given) - set(BASELINE_OPTIONS))
    if unknown:
        raise UnsupportedModelError(
            f"guide site '{site['name']}' asks for baseline option {unknown[0]!r}, which Pyro does not define; "
            f"its options are {sorted(BASELINE_OPTIONS)}"
        )
    options = {**BASELINE_OPTIONS, **given}
    if options["nn_baseline"] is not None and options["baseline_value"] is not None:
        raise UnsupportedModelError(
            f"guide site '{site['name']}' gives both nn_baseline and baseline_value; give one (as in Pyro)"
        )
    if options["nn_baseline"] is not None and options["nn_baseline_input"] is None:
        raise UnsupportedModelError(
            f"guide site '{site['name']}' gives nn_baseline without nn_baseline_input, the tensor it is applied to"
        )
    return options


def _shaped_like(baseline, signal, name):
    """A site's baseline, which must broadcast to its signal ``(K, *factor_sizes)`` without changing its shape."""
    try:
        shape = torch.broadcast_shapes(baseline.shape, signal.shape)
    except RuntimeError:
        shape = None
    if shape != signal.shape:
        raise UnsupportedModelError(
            f"guide site '{name}': its baseline has shape {tuple(baseline.shape)}, which does not broadcast to the "
            f"site's learning signal, one per particle and datum, {tuple(signal.shape)} (the data plates' sizes "
            f"{tuple(signal.shape[1:])})"
        )
    return baseline


def _module_key(name):
    """A site name as a module key (which cannot hold dots)."""
    return name.replace(".", "__")


class DecayingAverage(nn.Module):
    """Pyro's ``use_decaying_avg_baseline``: a running average of a site's cost, ``avg ← β avg + (1 − β) cost``,
    here of its mean over particles and data (over all ranks), returned before each update (0 at first) and
    frozen in ``eval()`` mode."""

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.zeros(()))

    def forward(self, cost, beta):
        previous = self.value.clone()
        if self.training:
            with torch.no_grad():
                count = all_reduce_sum_(cost.new_tensor(float(cost.numel())))
                mean = all_reduce_sum_(cost.detach().sum()) / count
                self.value.mul_(beta).add_((1 - beta) * mean.to(self.value.dtype))
        return previous.to(cost.dtype)


class SiteSetHelpers(nn.Module):
    """The baseline and signal statistics of one site set (either may be None, as the engine's options say)."""

    def __init__(self, baseline, moments):
        super().__init__()
        self.baseline = baseline
        self.moments = moments


def _built_for(baseline, moments):
    """``(features, sites)`` the plan's baseline and statistics were sized for (features 0 without a baseline),
    or None while unsized."""
    if baseline is not None:
        if baseline.has_uninitialized_params():
            return None
        return baseline.weight0.shape[1], getattr(baseline, f"bias{len(baseline.hidden)}").shape[0]
    if moments.has_uninitialized_params():
        return None
    return 0, moments.mean.shape[0]


class RunningMoments(LazyModuleMixin, nn.Module):
    """Running mean and variance of each site's learning signal (buffers, one entry per site).

    Updated by every call in training mode with momentum ``decay`` from the
    moments of the whole batch (over all ranks in a multi-process run); frozen in
    ``eval()`` mode. Returns the mean and max(1, std), shaped to broadcast
    against ``(sites, K, *factor_sizes)``.
    """

    def __init__(self, decay):
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("mean", UninitializedBuffer())
        self.register_buffer("var", UninitializedBuffer())

    def initialize_parameters(self, residual):
        if not self.has_uninitialized_params():
            return
        self.mean.materialize((residual.shape[0],), device=residual.device, dtype=residual.dtype)
        self.var.materialize((residual.shape[0],), device=residual.device, dtype=residual.dtype)
        with torch.no_grad():
            self.mean.zero_()
            self.var.fill_(1.0)

    def forward(self, residual):
        if residual.shape[0] != self.mean.shape[0]:
            raise ValueError(
                f"nvil keeps signal statistics for {self.mean.shape[0]} guide sites but this guide has "
                f"{residual.shape[0]}; use a fresh engine for a different program."
            )
        shape = (-1, *[1] * (residual.dim() - 1))
        if self.training:
            with torch.no_grad():
                dims = tuple(range(1, residual.dim()))
                count = all_reduce_sum_(residual.new_tensor(float(residual[0].numel())))
                mean = all_reduce_sum_(residual.sum(dims)) / count
                var = all_reduce_sum_((residual - mean.reshape(shape)).pow(2).sum(dims)) / count
                self.mean.lerp_(mean, 1 - self.decay)
                self.var.lerp_(var, 1 - self.decay)
        return self.mean.reshape(shape), self.var.sqrt().clamp(min=1.0).reshape(shape)


def _scores(particles):
    """log q of each guide latent, unscaled, ``(K, *factor_sizes)``: what its score function differentiates."""
    return {
        site["name"]: particles.reduce(site_log_prob(site))
        for site in particles.sites(particles.guide_trace, observed=False)
    }


def _baseline_input(particles, signals):
    """The observed data of each factor, ``(*factor_sizes, features)``, for signals ``(sites, K, *factor_sizes)``."""
    if tuple(signals.shape[2:]) != particles.factor_sizes():
        raise UnsupportedModelError(
            f"nvil's baseline C(x) is a function of each datum's observation, but the guide's latents are drawn "
            f"for {tuple(signals.shape[2:])} of the data plates' {particles.factor_sizes()} rows (a size-less "
            "pyro.plate draws a latent once for all rows): size the plate by the data, pyro.plate('data', len(x)), "
            "or use baseline=None."
        )
    features = observed_features(particles, signals.shape[2:], signals.dtype)
    if features is None:
        raise UnsupportedModelError(
            "nvil's baseline is a function of the observed data, but the model observes no site (no obs=); "
            "use baseline=None."
        )
    return features
