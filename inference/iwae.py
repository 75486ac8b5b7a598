"""``iwae``: the importance-weighted bound, reparameterized.

Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders".
With z_k = g_φ(ε_k, x) and w_k = p_θ(x, z_k) / q_φ(z_k | x), per datum::

    L_K = log (1/K) Σ_k w_k   ≤ log p(x),   L_1 = ELBO,   L_K ↑ log p(x) as K grows.

Its gradient in θ is Σ_k w̃_k ∇θ log p_θ(x, z_k) with normalized weights
w̃_k = w_k / Σ_j w_j; in φ, by default, autograd through g_φ and log q_φ.

``estimator="dreg"`` gives φ the doubly-reparameterized gradient (Tucker,
Lawson, Gu & Maddison 2019)::

    ∇φ L_K ≈ Σ_k w̃_k² ∂ log w_k / ∂z_k · ∂z_k / ∂φ      (log q with φ held fixed)

which has the same expectation and a variance that does not blow up as K
grows. θ's gradient is unchanged. With K = 1 it is ``svi`` with ``stl=True``.

Cost per step: one guide pass and one model pass over K × batch particles;
"dreg" adds one backward pass through the model to the latents.

Example::

    engine = pplgen.inference.get("iwae", num_particles=5, estimator="dreg")
    loss = engine(vae.model, vae.guide, x)

Metrics: ``loss`` (−L_K summed over the batch), ``bound`` (L_K summed),
``ess`` (effective sample size 1 / Σ_k w̃_k², averaged over data).
"""

import torch

from pplgen.bounds import effective_sample_size, log_mean_exp
from pplgen.checks import check_independent_guide_sites
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import guide_log_density, log_weights
from pplgen.sampling import MODEL_LEAVES, PATHWISE

ESTIMATORS = ("standard", "dreg")


class IWAE(ParticleEngine):
    name = "iwae"
    metric_names = ("loss", "bound", "ess")
    mean_metrics = ("ess",)
    requires_rsample = True
    needs_common_scale = True

    def __init__(self, num_particles=5, *, estimator="standard", max_plate_nesting=None):
        super().__init__(num_particles, max_plate_nesting)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.estimator = estimator

    def forward(self, model, guide, *args, **kwargs):
        dreg = self.estimator == "dreg"
        particles = self.particles(model, guide, args, kwargs, drawing=MODEL_LEAVES if dreg else PATHWISE)
        weights = log_weights(particles)
        bound = (weights.scale * log_mean_exp(weights.log_weights)).sum()
        normalized = torch.softmax(weights.log_weights.detach(), dim=0)
        ess = effective_sample_size(weights.log_weights)
        if dreg:
            surrogate = self._dreg_surrogate(particles, weights, normalized)
            objective = bound.detach() + (surrogate - surrogate.detach())
        else:
            objective = bound
        return Loss(-objective, {"loss": -bound.detach(), "bound": bound.detach(), "ess": ess})

    def _dreg_surrogate(self, particles, weights, normalized):
        """A scalar whose gradient is Σ w̃ ∇θ log p for θ and the DReG estimator for φ.

        The model scored detached copies of the latents, so log p reaches θ
        only; the path derivative ∂(Σ w̃² log p)/∂z is then sent into the guide
        through z, together with log q evaluated with φ held fixed.
        """
        model_term = (weights.scale * (normalized * weights.model)).sum()
        squared = weights.scale * normalized.pow(2)
        latents = particles.sites(particles.model_trace, observed=False)
        leaves = [site["value"] for site in latents]
        path = torch.autograd.grad((squared * weights.model).sum(), leaves, retain_graph=True, allow_unused=True)
        guide_values = {site["name"]: site["value"] for site in particles.sites(particles.guide_trace)}
        path_term = sum(
            (grad * guide_values[site["name"]]).sum() for site, grad in zip(latents, path) if grad is not None
        )
        fixed_guide = guide_log_density(particles, detach_params=True)
        return model_term + path_term - (squared * fixed_guide).sum()

    def needs_vectorized_particles(self):
        return "estimator='dreg'" if self.estimator == "dreg" else None

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        if self.estimator == "dreg":
            check_independent_guide_sites(probe, self.name, "estimator='dreg'")
        return probe

    def options(self):
        return {**super().options(), "estimator": self.estimator}
