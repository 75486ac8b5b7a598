"""``gan``: a generative adversarial network, trained on the same Pyro model a VAE trains.

Goodfellow et al. (2014), "Generative Adversarial Nets", with the
non-saturating generator loss. A GAN is the sleep phase of wake-sleep with
the generator learned instead of the recognition model: the engine dreams a
batch x̃ of the data's size from the model with its observations removed
(:func:`pplgen.dreams.dream`, reparameterized: x̃ = g_θ(z, ε) keeps its graph),
and a discriminator D_ψ(x) = σ(d_ψ(x)) learns by logistic regression to tell
data from dreams. With z̃, x̃ ~ p_θ::

    generator:      min_θ  E_{x̃ ~ p_θ}[−log D(x̃)]          (d held fixed)
    discriminator:  min_ψ  E_data[softplus(−d(x))] + E_{p_θ}[softplus(d(x̃))]
                           + γ/2 · E_data ‖∇_x d(x)‖²      (R1, Mescheder et al. 2018)

The surrogate gives θ the gradient of the generator loss alone (d's weights
are frozen copies in it); ψ gets nothing from it. The engine fits d itself
inside ``forward``, as ``avb`` fits its discriminator: in training mode each
call makes ``discriminator_steps`` = n updates of d with its own Adam
(:class:`~pplgen.nn.HelperFitter`, rate ``discriminator_lr``), n − 1 on fresh
dreams and one on the step's own dreams, detached; the generator loss is
then taken against the updated d (the alternating updates of Goodfellow et
al.'s algorithm, the discriminator first). So ``loss.surrogate.backward(); optimizer.step()`` trains a
GAN in any loop, and no gradient leaks either way. In ``eval()`` mode or
under ``torch.no_grad()`` a call changes nothing.

No guide is needed: ``pplgen.fit(model, "gan", x)`` trains a model with
``guide=None`` (a model family's guide, if any, is not run), and its held-out
log-likelihood is estimated by AIS. Observed and latent sites must be
reparameterizable (``rsample``): x ~ N(G(z), σ²) is, Bernoulli data or a
discrete mixture component are not, and are refused by name (there is no documented relaxation here: model the grey levels with
``VAE(likelihood="gaussian")``).

The discriminator sees each datum's observed arguments, flattened and
concatenated: a ReLU MLP (``discriminator=(256, 256)``, hidden sizes, built
for the first program it meets) or any ``torch.nn.Module`` mapping
``(batch, features)`` to logits ``(batch, 1)``, e.g. a convolutional one for
images (it gets the flattened rows; reshape inside). A module whose weights do
not require grad is held fixed (the tests use the optimal D* this way).

Options: ``discriminator``, ``discriminator_steps`` (default 1),
``discriminator_lr`` (default 2e-4), ``gradient_penalty`` γ (R1 weight,
default 0), ``data_arguments`` (which argument each observed site reads, when
it cannot be told). Metrics: ``loss`` (the generator loss, summed over the
batch), ``discriminator_loss`` (logistic loss before d's last update, summed
over both classes), ``discriminator_accuracy``, ``real_score`` and
``fake_score`` (mean D on data and on dreams).

Example::

    decoder = pplgen.models.VAE(latent_dim=10, likelihood="gaussian")   # x ~ N(G(z), σ²)
    pplgen.fit(decoder, "gan", x_train, epochs=20)                       # the same program svi trains
"""

import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.functional import softplus

from pplgen import inference
from pplgen.checks import UnsupportedModelError, distribution_name
from pplgen.dreams import check_data_arguments, dream, find_data_arguments
from pplgen.engine import Engine, Loss
from pplgen.nn import HelperFitter, LazyMLP, frozen_copy
from pplgen.particles import at_least_float32, is_auxiliary, is_observation
from pplgen.probe import probe_pair
from pplgen.programs import no_guide


def _likelihood_advice():
    """What a refusal advises: the registry's engines that train a model with a guide."""
    return f"gan cannot train this model; fit it with a likelihood-based engine ({inference.likelihood_engines()})"


class GAN(Engine):
    name = "gan"
    metric_names = ("loss", "discriminator_loss", "discriminator_accuracy", "real_score", "fake_score")
    mean_metrics = ("discriminator_accuracy", "real_score", "fake_score")
    requires_rsample = True
    needs_guide = False
    dreams = True
    needs_common_scale = False
    fits_own_helpers = True

    def __init__(
        self,
        *,
        discriminator=(256, 256),
        discriminator_steps=1,
        discriminator_lr=2e-4,
        gradient_penalty=0.0,
        data_arguments=None,
    ):
        super().__init__()
        if isinstance(discriminator, nn.Module):
            self.discriminator = discriminator
        elif isinstance(discriminator, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in discriminator):
            self.discriminator = LazyMLP(discriminator, "relu", owner="gan's discriminator")
        else:
            raise ValueError(
                f"discriminator must be hidden layer sizes (e.g. (256, 256)) or a torch.nn.Module, got {discriminator!r}"
            )
        if not isinstance(discriminator_steps, int) or isinstance(discriminator_steps, bool) or discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be a positive int, got {discriminator_steps!r}")
        for option, value, low in [
            ("discriminator_lr", discriminator_lr, 0),
            ("gradient_penalty", gradient_penalty, None),
        ]:
            valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not valid or (value <= 0 if low == 0 else value < 0):
                bound = "positive" if low == 0 else "non-negative"
                raise ValueError(f"{option} must be a finite {bound} number, got {value!r}")
        self.fitter = HelperFitter(float(discriminator_lr))
        self.discriminator_steps = discriminator_steps
        self.gradient_penalty = float(gradient_penalty)
        self.data_arguments = check_data_arguments(data_arguments)

    def forward(self, model, guide, *args, **kwargs):
        self.plan_for(model, guide, args, kwargs)
        updating = self.training and torch.is_grad_enabled()
        for _ in range(self.discriminator_steps - 1 if updating else 0):
            with torch.no_grad():
                real, fake = self._real_and_fake(model, args, kwargs)
            self._update_discriminator(real, fake)
        real, fake = self._real_and_fake(model, args, kwargs)
        if updating:
            discriminator_loss, statistics = self._update_discriminator(real, fake.detach())
        else:
            with torch.no_grad():
                discriminator_loss, statistics = self._discriminator_loss(real, fake)
        # Copies: a second call before backward (gradient accumulation) updates d in place.
        generator_loss = softplus(-self._logits(fake, frozen_copy(self.discriminator))).sum()
        metrics = {"loss": generator_loss.detach(), "discriminator_loss": discriminator_loss.detach(), **statistics}
        return Loss(generator_loss, metrics)

    def _real_and_fake(self, model, args, kwargs):
        """Rows of the observed arguments and of a reparameterized dream in their place, ``(batch, features)``."""
        dreamed = self._dream(model, args, kwargs, self.plan)
        keys = sorted(dreamed.data_arguments.values(), key=str)
        return _rows(args, kwargs, keys), _rows(dreamed.args, dreamed.kwargs, keys)

    def _dream(self, model, args, kwargs, plan):
        """A reparameterized dream with x̃ where the plan's data arguments are."""
        return dream(model, args, kwargs, data_arguments=plan.data_arguments, reparameterized=True)

    def _update_discriminator(self, real, fake):
        """One update of d alone by the engine's fitter; its loss and statistics before it."""
        loss, statistics = self._discriminator_loss(real, fake)
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        if params:  # a discriminator without trainable weights (a fixed D) is left as it is
            self.fitter.step(loss + self._penalty(real) if self.gradient_penalty else loss, params)
        return loss.detach(), statistics

    def _discriminator_loss(self, real, fake):
        """Logistic loss of d on data against dreams, summed over the batch, and its statistics."""
        self._initialize(real)
        real_logits, fake_logits = self._logits(torch.cat([real, fake])).chunk(2)
        loss = softplus(-real_logits).sum() + softplus(fake_logits).sum()
        with torch.no_grad():
            statistics = {
                "discriminator_accuracy": 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()),
                "real_score": torch.sigmoid(real_logits).mean(),
                "fake_score": torch.sigmoid(fake_logits).mean(),
            }
        return loss, statistics

    def _penalty(self, real):
        """R1: γ/2 · Σ_data ‖∇_x d(x)‖², on real data only."""
        real = real.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(self._logits(real).sum(), real, create_graph=True)
        return 0.5 * self.gradient_penalty * gradient.pow(2).sum()

    def _logits(self, rows, parameters=None):
        """d(x) of each row, ``(batch,)``, in float32 at least; with ``parameters`` (frozen copies) in their place."""
        inputs = (rows, 1) if isinstance(self.discriminator, LazyMLP) else (rows,)
        if parameters is None:
            logits = self.discriminator(*inputs)
        else:
            logits = functional_call(self.discriminator, parameters, inputs)
        if logits.shape != (len(rows), 1):
            raise ValueError(
                f"gan's discriminator must map (batch, features) to (batch, 1), gave {tuple(logits.shape)}"
            )
        return at_least_float32(logits.squeeze(-1))

    def _initialize(self, real):
        if isinstance(self.discriminator, LazyMLP):
            self.discriminator.initialize_parameters(real, 1)
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        if params:
            self.fitter.initialize_parameters(params)

    def refuse(self, model, guide, args, kwargs):
        """Probes the model alone and refuses density terms, draws and observations without ``rsample``, and
        data it cannot find among the arguments; finds which argument holds each observation (for the
        discriminator's rows)."""
        probe = probe_pair(model, no_guide, args, kwargs, check=False)
        observed = []
        for site in probe.sites(probe.model_trace, observed=True):
            if is_auxiliary(site):
                raise UnsupportedModelError(
                    f"site '{site['name']}' is a pyro.factor: gan learns the model from its samples alone and cannot "
                    f"use a density term; train this model with a likelihood-based engine ({inference.likelihood_engines()})."
                )
            if is_observation(site):
                observed.append(site)
        if not observed:
            raise UnsupportedModelError(
                "gan dreams the model's observations and tells them from the data, but the model observes no site "
                "(no obs=); observe the data with pyro.sample(..., obs=...)."
            )
        for site in probe.sites(probe.model_trace, observed=False):
            if not site["fn"].has_rsample:
                raise UnsupportedModelError(
                    f"latent site '{site['name']}' is a {distribution_name(site['fn'])} without rsample: gan "
                    "differentiates the dreamed data through every draw of the model, and no gradient passes "
                    "this one (the parameters before it would never move). Reparameterize the site, or train this "
                    f"model with a likelihood-based engine ({inference.likelihood_engines()})."
                )
        for site in observed:
            if not site["fn"].has_rsample:
                raise UnsupportedModelError(
                    f"site '{site['name']}' observes the data through a {distribution_name(site['fn'])}, which has no "
                    "rsample: gan needs dreams that are differentiable in the model's parameters. Model real values "
                    f"instead (e.g. VAE(likelihood='gaussian') on grey levels), or train this model with a "
                    f"likelihood-based engine ({inference.likelihood_engines()})."
                )
        observations = {site["name"]: site["value"] for site in observed}
        probe.data_arguments = (
            dict(self.data_arguments)
            if self.data_arguments is not None
            else find_data_arguments(observations, args, kwargs, advice=_likelihood_advice())
        )
        return probe

    def rehearse(self, model, guide, args, kwargs, probe):
        """A dream, which must take the data's place (the shapes of the data), as the step's will."""
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            with torch.no_grad():
                self._dream(model, args, kwargs, probe)

    def adopt(self, plan, args, kwargs):
        """Builds the discriminator for the program's data rows."""
        self._initialize(_rows(args, kwargs, sorted(plan.data_arguments.values(), key=str)))

    def options(self):
        discriminator = (
            self.discriminator.hidden if isinstance(self.discriminator, LazyMLP) else type(self.discriminator).__name__
        )
        return {
            "discriminator": discriminator,
            "discriminator_steps": self.discriminator_steps,
            "discriminator_lr": self.fitter.lr,
            "gradient_penalty": self.gradient_penalty,
        }


def _rows(args, kwargs, keys):
    """The arguments at ``keys`` (positions or keywords) as rows, flattened and concatenated, ``(batch, features)``."""
    values = [args[key] if isinstance(key, int) else kwargs[key] for key in keys]
    rows = [value.reshape(len(value), -1) if value.dim() else value.reshape(1, 1) for value in values]
    return torch.cat([r.to(rows[0].dtype) for r in rows], dim=-1)
