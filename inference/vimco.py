"""``vimco``: the multi-sample bound with leave-one-out control variates.

Mnih & Rezende (2016), "Variational Inference for Monte Carlo Objectives".
With K particles z_k ~ q_φ(z | x) drawn without a path derivative,
w_k = p_θ(x, z_k) / q_φ(z_k | x) and L = log (1/K) Σ_j w_j, per datum::

    ∇ L ≈ Σ_k (L − L_{−k}) ∇φ log q_φ(z_k | x) + Σ_k w̃_k ∇ log w_k

where w̃_k = w_k / Σ_j w_j and L_{−k} is L with w_k replaced by the geometric
mean of the other weights, a control variate that does not depend on z_k.
θ gets the gradient of the K-sample bound, Σ_k w̃_k ∇θ log p_θ(x, z_k). The
bound is IWAE's, trained here without reparameterization, so it works for
discrete latents and any guide distribution with a ``log_prob``.

Cost per step: one guide pass and one model pass over K × batch particles;
the K leave-one-out bounds cost O(K²) per datum, negligible beside the passes.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200, 200))
    engine = pplgen.inference.get("vimco", num_particles=5)
    loss = engine(sbn.model, sbn.guide, x)

Metrics: ``loss`` (−L summed over the batch), ``bound`` (L summed),
``ess`` (effective sample size, averaged over data).
"""

from pplgen.bounds import effective_sample_size, leave_one_out_log_mean_exp, log_mean_exp
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import log_weights
from pplgen.sampling import DETACHED


class VIMCO(ParticleEngine):
    name = "vimco"
    metric_names = ("loss", "bound", "ess")
    mean_metrics = ("ess",)
    requires_rsample = False
    needs_common_scale = True

    def __init__(self, num_particles=5, *, max_plate_nesting=None):
        super().__init__(num_particles, max_plate_nesting)
        if num_particles < 2:
            raise ValueError(f"vimco needs num_particles >= 2 for its leave-one-out baselines, got {num_particles}")

    def forward(self, model, guide, *args, **kwargs):
        particles = self.particles(model, guide, args, kwargs, drawing=DETACHED)
        weights = log_weights(particles)
        bound = log_mean_exp(weights.log_weights)
        signals = (bound - leave_one_out_log_mean_exp(weights.log_weights)).detach()
        score = (signals * weights.guide).sum(0)
        total = (weights.scale * bound).sum()
        estimator = (weights.scale * (bound + score)).sum()
        surrogate = -total.detach() - (estimator - estimator.detach())
        metrics = {"loss": -total.detach(), "bound": total.detach(), "ess": effective_sample_size(weights.log_weights)}
        return Loss(surrogate, metrics)
