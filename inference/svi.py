"""``svi``: the reparameterized evidence lower bound.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; Rezende, Mohamed &
Wierstra (2014). With z_k = g_φ(ε_k, x), ε_k ~ p(ε)::

    ELBO ≈ (1/K) Σ_k [log p_θ(x, z_k) − log q_φ(z_k | x)]

and its gradient in θ and φ is taken by autograd through g_φ.

Options:

* ``analytic_kl=True`` replaces log p(z) − log q(z) by −KL(q ‖ p) at every
  latent site whose pair of distributions has a registered closed form (as
  Pyro's ``TraceMeanField_ELBO``; it assumes each site's prior depends only on
  latents the guide draws before it).
* ``stl=True``, "sticking the landing" (Roeder, Wu & Duvenaud 2017): log q is
  evaluated with the guide's parameters detached, dropping the score term
  ∇φ log q_φ(z)|_z, whose expectation is zero. The estimator stays unbiased and
  its variance vanishes when q equals the posterior.

Cost per step: one guide pass and one model pass over K × batch particles.

Example::

    vae = pplgen.models.VAE()
    engine = pplgen.inference.get("svi", num_particles=1, stl=True)
    loss = engine(vae.model, vae.guide, x)
    loss.surrogate.backward()

Metrics: ``loss`` (−ELBO of the batch), ``elbo``.
"""

from pyro.infer import TraceEnum_ELBO
from torch.distributions import kl_divergence

from pplgen.checks import UnsupportedModelError, check_independent_guide_sites
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import masked, site_log_prob


class SVI(ParticleEngine):
    name = "svi"
    metric_names = ("loss", "elbo")
    requires_rsample = True
    sums_out_guide_enumeration = True

    def __init__(self, num_particles=1, *, analytic_kl=False, stl=False, max_plate_nesting=None):
        super().__init__(num_particles, max_plate_nesting)
        if analytic_kl and stl:
            raise ValueError(
                "analytic_kl and stl cannot be combined: stl changes the Monte Carlo estimate of "
                "log q, which analytic_kl replaces; choose one."
            )
        self.analytic_kl = bool(analytic_kl)
        self.stl = bool(stl)

    def forward(self, model, guide, *args, **kwargs):
        plan = self.plan_for(model, guide, args, kwargs)
        if plan.guide_enumerated:
            return self._trace_enum(model, guide, args, kwargs, plan)
        particles = self.particles(model, guide, args, kwargs)
        if any(site["infer"].get("enumerate") for site in particles.sites(particles.guide_trace)):
            return self._trace_enum(model, guide, args, kwargs, plan)  # a batch whose guide enumerates
        elbo = self.elbo(particles)
        loss = -elbo
        return Loss(loss, {"loss": loss.detach(), "elbo": elbo.detach()})

    def _trace_enum(self, model, guide, args, kwargs, plan):
        """With guide sites to enumerate, Pyro's ``TraceEnum_ELBO`` estimator itself: each enumerated guide
        site summed over its support weighted by q (and the model's enumerated sites summed out), the rest
        drawn, K particles at once."""
        estimator = TraceEnum_ELBO(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=plan.max_plate_nesting,
        )
        loss = estimator.differentiable_loss(model, guide, *args, **kwargs)
        return Loss(loss, {"loss": loss.detach(), "elbo": -loss.detach()})

    def elbo(self, particles):
        """Σ over sites of scaled log p − log q (or −KL), averaged over particles."""
        guide_sites = {s["name"]: s for s in particles.sites(particles.guide_trace)}
        total = particles.zeros().sum()
        for site in particles.sites(particles.model_trace):
            negative_kl = self._negative_kl(guide_sites.get(site["name"]), site)
            if negative_kl is None:
                total = total + site_log_prob(site, scaled=True).sum()
            else:
                total = total + (site["scale"] * negative_kl).sum()
                guide_sites.pop(site["name"])
        for site in guide_sites.values():
            total = total - site_log_prob(site, detach_params=self.stl, scaled=True).sum()
        return total / particles.num_particles

    def _negative_kl(self, guide_site, model_site):
        """−KL(q ‖ p) at a latent site, or None where not asked for or not available."""
        if not self.analytic_kl or guide_site is None:
            return None
        try:
            negative_kl = -kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            return None
        return masked(negative_kl, model_site["mask"])

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        if probe.guide_enumerated and (self.stl or self.analytic_kl):
            raise UnsupportedModelError(
                f"guide site '{probe.guide_enumerated[0]}' asks to be enumerated, which svi sums out with Pyro's "
                f"TraceEnum_ELBO estimator, and that has no {'stl' if self.stl else 'analytic_kl'}; drop the option."
            )
        if self.stl:
            check_independent_guide_sites(probe, self.name, "stl=True")
        return probe

    def options(self):
        return {**super().options(), "analytic_kl": self.analytic_kl, "stl": self.stl}
