"""``rws``: reweighted wake-sleep.

Bornschein & Bengio (2015), "Reweighted Wake-Sleep". With K particles
z_k ~ q_φ(z | x) and self-normalized weights w̃_k ∝ p_θ(x, z_k) / q_φ(z_k | x)::

    θ:          Σ_k w̃_k ∇θ log p_θ(x, z_k)                 (→ ∇θ log p(x) as K grows)
    wake-φ:     Σ_k w̃_k ∇φ log q_φ(z_k | x)                (→ −∇φ KL(p(z|x) ‖ q) as K grows)
    sleep-φ:    ∇φ log q_φ(z̃ | x̃),   (z̃, x̃) ~ p_θ           (dreamed, see :mod:`pplgen.dreams`)

``phi`` chooses the guide's update: ``"wake"`` (the default, the paper's
best), ``"sleep"``, or ``"both"`` (their average). All of it is one scalar
surrogate whose value is the K-sample bound; the weights are per datum, so
the engine trains on mini-batches and on plates subsampled inside the
program (the sleep phase needs the model to observe its whole data
argument), and takes the same ``guide(x)`` as every other engine.

Cost per step: one guide pass and one model pass over K × batch particles;
a sleep phase adds one model pass and one guide pass over the batch.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200, 200))
    engine = pplgen.inference.get("rws", num_particles=5, phi="wake")
    loss = engine(sbn.model, sbn.guide, x)

Metrics: ``loss`` (−L_K summed over the batch), ``bound`` (the K-sample
bound L_K, summed), ``ess`` (effective sample size, averaged over data).
"""

import torch

from pplgen.bounds import effective_sample_size, log_mean_exp
from pplgen.checks import check_has_latents, check_observes
from pplgen.dreams import check_data_arguments, check_dreams, sleep_phase
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import log_weights
from pplgen.sampling import DETACHED

PHI_UPDATES = ("wake", "sleep", "both")


class RWS(ParticleEngine):
    name = "rws"
    metric_names = ("loss", "bound", "ess")
    mean_metrics = ("ess",)
    requires_rsample = False
    needs_common_scale = True

    def __init__(self, num_particles=5, *, phi="wake", data_arguments=None, max_plate_nesting=None):
        super().__init__(num_particles, max_plate_nesting)
        if phi not in PHI_UPDATES:
            raise ValueError(f"phi must be one of {PHI_UPDATES}, got {phi!r}")
        self.phi = phi
        self.data_arguments = check_data_arguments(data_arguments)

    def forward(self, model, guide, *args, **kwargs):
        particles = self.particles(model, guide, args, kwargs, drawing=DETACHED)
        weights = log_weights(particles)
        normalized = torch.softmax(weights.log_weights.detach(), dim=0)
        bound = (weights.scale * log_mean_exp(weights.log_weights)).sum()
        estimator = (weights.scale * normalized * weights.model).sum() + self._phi_term(
            model, guide, args, kwargs, weights, normalized
        )
        surrogate = -bound.detach() - (estimator - estimator.detach())
        metrics = {"loss": -bound.detach(), "bound": bound.detach(), "ess": effective_sample_size(weights.log_weights)}
        return Loss(surrogate, metrics)

    def _phi_term(self, model, guide, args, kwargs, weights, normalized):
        wake = (weights.scale * normalized * weights.guide).sum() if self.phi != "sleep" else 0.0
        if self.phi == "wake":
            return wake
        first, self.plan.stepped = not self.plan.stepped, True
        sleep = sleep_phase(model, guide, args, kwargs, self.data_arguments, self.name, first=first)
        return sleep if self.phi == "sleep" else (wake + sleep) / 2

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        if self.phi != "wake":
            check_observes(probe, f"{self.name}'s sleep phase dreams the observations in place of the data")
            check_has_latents(probe, self.name)
        return probe

    def rehearse(self, model, guide, args, kwargs, probe):
        """Also, when φ sleeps, a dream scored by the guide, as the sleep phase will."""
        super().rehearse(model, guide, args, kwargs, probe)
        if self.phi != "wake":
            check_dreams(model, guide, args, kwargs, self.data_arguments, self.name)

    def options(self):
        return {**super().options(), "phi": self.phi, "data_arguments": self.data_arguments}
