"""``relax``: unbiased gradients for binary and one-hot guide sites, with a learned control variate.

Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), "Backpropagation through the
Void: Optimizing control variates for black-box gradient estimation". The
estimator of :mod:`~pplgen.inference.rebar` with its control variate made
free-form: with z, b = H(z) and z̃ ~ z | b drawn as there, and f(b) =
log p_θ(x, b) − log q_φ(b | x) per datum, the gradient of E_q[f] in each
site's logits α is::

    ĝ_α = [f(b) − c_ψ(z̃)] ∂/∂α log q(b) + ∂/∂α c_ψ(z) − ∂/∂α c_ψ(z̃),
    c_ψ(z) = η f(σ_λ(z)) + r_ψ(x, σ_λ(z))

passed to φ through α; θ gets ∇θ log p_θ(x, b). r_ψ is a tanh MLP of the
datum's observations and its relaxed latents (``control`` gives its hidden
sizes), owned by this engine and, with η and λ, trained by the single-sample
gradient of E‖ĝ‖², the estimator's variance (§3.2 of the paper; ĝ taken with
respect to the logits). Unbiased for any c_ψ, so the control variate only
ever changes the variance. The paper's SBN experiments use this form of c
(the REBAR term plus a network).

What the program must be, the cost and the refusals are those of
:mod:`~pplgen.inference.rebar`, plus one pass of r_ψ over 2K × batch rows.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200,))
    engine = pplgen.inference.get("relax", control=(200,))
    loss = engine(sbn.model, sbn.guide, x)

Metrics: as for rebar: ``loss``, ``elbo``, ``temperature``, ``eta``, ``variance``.
"""

import torch

from pplgen.inference.rebar import Rebar
from pplgen.nn import LazyMLP
from pplgen.particles import latent_features, observed_features


class Relax(Rebar):
    name = "relax"

    def __init__(self, num_particles=1, *, control=(100,), temperature=0.5, eta=1.0, max_plate_nesting=None):
        super().__init__(
            num_particles, temperature=temperature, eta=eta, adapt=True, max_plate_nesting=max_plate_nesting
        )
        if not (isinstance(control, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in control)):
            raise ValueError(f"control must be a sequence of hidden layer sizes (e.g. (100,)), got {control!r}")
        self.control = LazyMLP(control, owner="relax's control variate")

    def control_variate(self, particles, f_z, f_z_tilde):
        c_z, c_z_tilde = super().control_variate(particles, f_z, f_z_tilde)
        if not particles.sites(particles.guide_trace, observed=False):
            return c_z, c_z_tilde
        r = self.control(_control_input(particles), 1).squeeze(-1)
        k = self.num_particles
        return c_z + r[k : 2 * k], c_z_tilde + r[2 * k :]

    def adopt(self, probe, args, kwargs):
        """Builds r_ψ for this program (its input size is the datum's observations and latents)."""
        super().adopt(probe, args, kwargs)
        if probe.sites(probe.guide_trace, observed=False):
            self.control.initialize_parameters(_control_input(probe.particles), 1)

    def options(self):
        options = {**super().options(), "control": self.control.hidden}
        del options["adapt"]
        return options


def _control_input(particles):
    """Each particle's relaxed latents with its datum's observations, ``(BLOCKS·K, *factor_sizes, features)``."""
    latents = latent_features(particles, particles.guide_trace)
    observed = observed_features(particles, latents.shape[1:-1], latents.dtype)
    if observed is None:
        return latents
    return torch.cat([latents, observed.expand(*latents.shape[:-1], observed.shape[-1])], -1)
