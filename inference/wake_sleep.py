"""``wake_sleep``: the wake-sleep algorithm.

Hinton, Dayan, Frey & Neal (1995), "The wake-sleep algorithm for unsupervised
neural networks". Two phases, each a maximum-likelihood step on samples of
the other network::

    wake:   θ ← ∇θ log p_θ(x, z),        z ~ q_φ(z | x), detached
    sleep:  φ ← ∇φ log q_φ(z̃ | x̃),       (z̃, x̃) ~ p_θ(z, x), detached

The sleep phase dreams: the model runs with its observations removed and
the dreamed x̃ takes the data argument's place when the guide is scored
(:mod:`pplgen.dreams`; pass ``data_arguments`` where the argument cannot be
found). Neither phase follows the gradient of a single objective; the value
reported is the ELBO at the wake sample.

Cost per step: one guide pass and one model pass over K × batch particles
(wake), one model pass and one guide pass over the batch (sleep).

Example::

    machine = pplgen.models.HelmholtzMachine(layers=(200, 200))
    engine = pplgen.inference.get("wake_sleep")
    loss = engine(machine.model, machine.guide, x)

Metrics: ``loss`` (−ELBO of the batch at the wake sample), ``elbo``,
``sleep_log_q`` (Σ log q(z̃ | x̃) over the dreamed batch).
"""

from pplgen.checks import check_has_latents, check_observes
from pplgen.dreams import check_data_arguments, check_dreams, sleep_phase
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import guide_log_density, model_log_density
from pplgen.sampling import DETACHED


class WakeSleep(ParticleEngine):
    name = "wake_sleep"
    metric_names = ("loss", "elbo", "sleep_log_q")
    requires_rsample = False
    dreams = True

    def __init__(self, num_particles=1, *, data_arguments=None, max_plate_nesting=None):
        super().__init__(num_particles, max_plate_nesting)
        self.data_arguments = check_data_arguments(data_arguments)

    def forward(self, model, guide, *args, **kwargs):
        particles = self.particles(model, guide, args, kwargs, drawing=DETACHED)
        log_p = model_log_density(particles, scaled=True).sum() / particles.num_particles
        log_q = guide_log_density(particles, scaled=True).sum() / particles.num_particles
        elbo, wake = log_p - log_q, log_p
        first, self.plan.stepped = not self.plan.stepped, True
        sleep = sleep_phase(model, guide, args, kwargs, self.data_arguments, self.name, first=first)
        estimator = wake + sleep
        surrogate = -elbo.detach() - (estimator - estimator.detach())
        return Loss(surrogate, {"loss": -elbo.detach(), "elbo": elbo.detach(), "sleep_log_q": sleep.detach()})

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        check_observes(probe, f"{self.name}'s sleep phase dreams the observations in place of the data")
        check_has_latents(probe, self.name)
        return probe

    def rehearse(self, model, guide, args, kwargs, probe):
        """Also a dream scored by the guide, as the sleep phase will."""
        super().rehearse(model, guide, args, kwargs, probe)
        check_dreams(model, guide, args, kwargs, self.data_arguments, self.name)

    def options(self):
        return {**super().options(), "data_arguments": self.data_arguments}
