"""The engine contract: what every inference engine in pplgen is.

An engine is a :class:`torch.nn.Module` whose ``forward(model, guide, *args,
**kwargs)`` takes the same arguments Pyro passes to a model and its guide and
returns a :class:`Loss`::

    loss = engine(model, guide, x)
    loss.surrogate.backward()        # every parameter now holds its update
    loss.metrics["loss"]             # the value of the objective

``loss.surrogate`` is a scalar to *minimize*. Its value is the engine's
objective (the negative bound it optimizes, summed over the batch and scaled
as Pyro scales subsampled plates), and ``.backward()`` leaves on

* model parameters θ: the engine's update direction for the generative model,
* guide parameters φ: its update direction for the inference network,
* helper parameters ψ (the engine's own submodules, e.g. nvil's
  baselines): the gradient of the helper's own fitting loss,

each routed to its role with ``detach()`` inside the one scalar. So a training
loop, an optimizer, a scheduler or DDP sees only a module that returns a loss,
and swapping engines is swapping one object. A helper that must be fitted
harder than one step of the loop's optimizer allows (avb's discriminator) is
fitted by the engine itself inside ``forward``, in training mode, so
``loss.surrogate.backward(); optimizer.step()`` is all any loop does.

``loss.metrics`` maps documented names (each engine's ``metric_names``) to
detached scalar tensors; ``"loss"`` is always among them.

Before training, :meth:`Engine.check` probes the pair once
(:mod:`pplgen.probe`) and raises :class:`UnsupportedModelError` naming the
offending site and the engines that can handle it; a pair it accepts trains.
``check`` changes nothing in the engine; :meth:`Engine.prepare` checks the
pair and adopts its probe as the engine's **plan** (building helpers sized by
the program), which every later call reads. An engine that meets a pair it has
not prepared prepares it on its first call, whoever calls it (``pplgen.fit``,
a plain loop, Pyro's ``SVI``, under ``torch.no_grad`` or not), so every entry
path gets the same verdict. A program whose data change its sites (a label
observed on some batches, drawn on others) is one program: a site set the
plan has not seen is checked when it first appears, with ``check``'s verdict.

A pair in which no parameter reaches the objective still gives a surrogate
that ``.backward()`` accepts: a step that moves nothing, as Pyro's ``SVI``
takes. Pyro's own training loop takes any engine through
:meth:`Engine.differentiable_loss`::

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=engine.differentiable_loss)
"""

from typing import ClassVar, NamedTuple

import pyro
import torch

from pplgen.checks import (
    UnsupportedModelError,
    check_common_scale,
    check_explicit_guide,
    check_particles,
    check_reparameterizable,
    check_scored_guide,
    draw_particles,
    refuse_enumeration,
    refuse_guide_enumeration,
)
from pplgen.particles import Particles, sample_particles, site_structure
from pplgen.probe import Probe, probe_pair
from pplgen.programs import owning_modules
from pplgen.sampling import PATHWISE, Drawing

__all__ = ["Engine", "Loss", "ParticleEngine", "UnsupportedModelError"]


class Loss(NamedTuple):
    """What an engine returns: a surrogate to differentiate and named metrics."""

    surrogate: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Engine(torch.nn.Module):
    """Base class of inference engines. Subclasses set ``name`` and
    ``metric_names`` and implement :meth:`forward` (and :meth:`check` when
    they refuse some programs)."""

    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    #: The engine fits its own networks inside ``forward`` (avb's discriminator): they are no optimizer's
    #: "helper" role, and their rates are the engine's options.
    fits_own_helpers: ClassVar[bool] = False
    #: The engine trains a guide; a guide-free engine (gan) trains the model alone and gets :func:`no_guide`.
    needs_guide: ClassVar[bool] = True
    #: Metrics that are averages over the batch (the others are batch totals): averaged, not summed, over ranks.
    mean_metrics: ClassVar[tuple[str, ...]] = ()
    #: Whether the engine reads log p(x, z) with the model's enumerated sites summed out (:mod:`pplgen.enumeration`).
    sums_out_enumerated: ClassVar[bool] = False
    #: Whether the engine sums guide sites that ask to be enumerated over their support, weighted by q.
    sums_out_guide_enumeration: ClassVar[bool] = False
    #: Whether the engine's estimator is defined for binary (Bernoulli) guide sites only.
    binary_latents_only: ClassVar[bool] = False
    #: Whether the engine's estimator is defined for discrete (Bernoulli, OneHotCategorical) guide sites only.
    discrete_latents_only: ClassVar[bool] = False
    #: Whether the engine draws discrete guide sites from a continuous relaxation (and so trains them pathwise).
    relaxes_discrete: ClassVar[bool] = False
    #: The engine (with its default options) trains on dreams, data drawn from the model in place of the
    #: observed arguments (:mod:`pplgen.dreams`), so it refuses models that cannot be dreamed.
    dreams: ClassVar[bool] = False

    def __init__(self):
        super().__init__()
        self.register_forward_hook(_differentiable_surrogate)
        #: The accepted probe of the pair being trained (:meth:`prepare`), None before the first.
        self.plan = None
        self._program = None
        self._structures = set()

    def forward(self, model, guide, *args, **kwargs) -> Loss:
        raise NotImplementedError

    def __getstate__(self):
        """A copy or a pickle of an engine holds no plan: it prepares one for its first pair."""
        state = super().__getstate__()
        return {**state, "plan": None, "_program": None, "_structures": set()}

    def check(self, model, guide, *args, **kwargs) -> Probe:
        """Raise :class:`UnsupportedModelError` if this engine cannot train the pair; returns its probe.

        The verdict has two parts: :meth:`refuse` reads it off the probe (one run of the pair), and
        :meth:`rehearse` tries, on the side, what the step does that one run cannot show (several particles at
        once, a dream, a prior run). Leaves the engine as it was (see :meth:`prepare`)."""
        probe = self.refuse(model, guide, args, kwargs)
        self.rehearse(model, guide, args, kwargs, probe)
        return probe

    def refuse(self, model, guide, args, kwargs) -> Probe:
        """Probe the pair and refuse, from the probe alone, what this engine cannot train; returns the probe."""
        return probe_pair(model, guide, args, kwargs)

    def rehearse(self, model, guide, args, kwargs, probe: Probe) -> None:
        """Try what the step does beyond the probe's run, leaving the RNG untouched; the engine's first step
        on a plan makes the same runs itself and gives the same verdict (so training runs them once)."""

    def prepare(self, model, guide, *args, **kwargs) -> Probe:
        """Probe the pair, refuse what the probe shows, and adopt the probe as this engine's plan; returns the
        plan. What :meth:`rehearse` tries, the first step on the plan tries as it runs."""
        plan = self.refuse(model, guide, args, kwargs)
        self.adopt(plan, args, kwargs)
        self.plan, self._program, self._structures = plan, (model, guide), {plan.structure}
        return plan

    def adopt(self, plan, args, kwargs):
        """Build what the engine sizes by the program (baselines, discriminators) from an accepted ``plan``
        of the pair on these arguments."""

    def plan_for(self, model, guide, args, kwargs):
        """The plan of this pair, prepared on the first call (or for a pair other than the prepared one)."""
        if self.plan is None or self._program != (model, guide):
            self.prepare(model, guide, *args, **kwargs)
        return self.plan

    def check_structure(self, structure, model, guide, args, kwargs):
        """Check a site set the plan has not seen (see :func:`pplgen.particles.site_structure`) as
        :meth:`check` would; seen ones cost a set lookup."""
        if structure not in self._structures:
            self.check(model, guide, *args, **kwargs)
            self._structures.add(structure)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The surrogate alone, for Pyro's ``SVI(model, guide, optim, loss=engine.differentiable_loss)``.

        Registers in Pyro's parameter store this engine's own networks
        (baselines, discriminators) under ``"pplgen.<engine name>"`` and the
        ``torch.nn.Module`` behind model and guide (a module passed whole, or
        the owner of bound methods such as ``vae.model``) under
        ``"pplgen.<class name>"``, so Pyro's optimizer steps all of them
        (an engine that fits its own networks, avb, steps those itself).
        """
        loss = self(model, guide, *args, **kwargs)
        for module in owning_modules(model, guide):
            if any(p.requires_grad for p in module.parameters()):
                pyro.module(f"pplgen.{type(module).__name__}", module)
        if any(p.requires_grad for p in self.parameters()):
            pyro.module(f"pplgen.{self.name}", self)
        return loss.surrogate

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())

    def options(self) -> dict:
        """The constructor options, for ``repr`` and run records."""
        return {}


class ParticleEngine(Engine):
    """An engine that scores K vectorized guide particles under the model.

    Holds the options every such engine shares and runs the particles through
    :func:`pplgen.particles.sample_particles`; ``max_plate_nesting`` is found by
    the probe in :meth:`check` when not given, and the plan says whether the
    particles run at once or one run each.
    """

    #: Whether every guide site must have ``rsample`` (gradients pass through the draws); else a score-function
    #: estimator, which refuses point-estimate (Delta) guide sites.
    requires_rsample: ClassVar[bool]
    #: Whether the engine trains guides whose sites have no density (``Implicit`` samplers).
    implicit_guides: ClassVar[bool] = False
    #: Whether the engine weighs all sites of a datum together (importance weights), so they need one scale.
    needs_common_scale: ClassVar[bool] = False
    sums_out_enumerated = True

    def __init__(self, num_particles, max_plate_nesting=None):
        super().__init__()
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if max_plate_nesting is not None and (not isinstance(max_plate_nesting, int) or max_plate_nesting < 0):
            raise ValueError(f"max_plate_nesting must be a non-negative int or None, got {max_plate_nesting!r}")
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting

    def particles(self, model, guide, args, kwargs, *, num_particles=None, drawing: Drawing = PATHWISE) -> Particles:
        """K particles of the pair as the plan draws them; the first K > 1 of a plan tries them at once, and
        one run each if the programs do not broadcast, and the first single particle of a model with sites to
        sum out tries the enumeration (the verdicts :meth:`rehearse` gives)."""
        plan = self.plan_for(model, guide, args, kwargs)
        num_particles = num_particles or self.num_particles
        if (num_particles > 1 or plan.enumerated) and plan.vectorized is None:
            options = {"num_particles": num_particles, "drawing": drawing, "enumerated": bool(plan.enumerated)}
            particles, plan.vectorized = draw_particles(
                model,
                guide,
                args,
                kwargs,
                self.name,
                plan.max_plate_nesting,
                self.needs_vectorized_particles(),
                **options,
            )
        else:
            particles = sample_particles(
                model,
                guide,
                args,
                kwargs,
                num_particles=num_particles,
                max_plate_nesting=plan.max_plate_nesting,
                drawing=drawing,
                vectorized=plan.vectorized is not False,
                enumerated=bool(plan.enumerated),
            )
        self.check_structure(site_structure(particles), model, guide, args, kwargs)
        return particles

    def refuse(self, model, guide, args, kwargs) -> Probe:
        """Probe the pair (keeping its ``max_plate_nesting``) and refuse what this engine cannot train."""
        try:
            probe = probe_pair(model, guide, args, kwargs, max_plate_nesting=self.max_plate_nesting)
        except UnsupportedModelError:
            raise
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from error
        if probe.guide_enumerated and not self.sums_out_guide_enumeration:
            refuse_guide_enumeration(probe, self.name)
        if not self.implicit_guides:
            check_explicit_guide(probe, self.name)
        self.check_guide_gradients(probe)
        if self.needs_common_scale:
            check_common_scale(probe, self.name)
        if probe.enumerated and not self.sums_out_enumerated:
            refuse_enumeration(probe, self.name, "its estimator needs every latent drawn")
        return probe

    def check_guide_gradients(self, probe: Probe) -> None:
        """Every guide site can pass its gradient as the estimator needs: through the draw (``rsample``), or by
        its score (not a point estimate)."""
        if self.requires_rsample:
            check_reparameterizable(probe, self.name)
        else:
            check_scored_guide(probe, self.name)

    def rehearse(self, model, guide, args, kwargs, probe: Probe) -> None:
        """Two particles at once (or one run each) when the engine draws several; the one it draws with the
        model's sites enumerated when there are sites to sum out (:mod:`pplgen.enumeration`)."""
        drawn = self.particles_per_step()
        if drawn > 1 or probe.enumerated:
            probe.vectorized = check_particles(
                model,
                guide,
                args,
                kwargs,
                self.name,
                probe.max_plate_nesting,
                self.needs_vectorized_particles(),
                enumerated=bool(probe.enumerated),
                num_particles=min(drawn, 2),
            )

    def particles_per_step(self):
        """How many particles a step draws at once: ``num_particles``, unless the estimator draws more."""
        return self.num_particles

    def needs_vectorized_particles(self):
        """The option that needs all particles drawn at once (it differentiates with respect to latents, or its
        draws cannot be made one run at a time), if on."""
        return None

    def options(self):
        return {"num_particles": self.num_particles}


def _differentiable_surrogate(engine, inputs, loss):
    """A surrogate that no parameter reaches becomes a leaf that ``.backward()`` accepts (a step that moves nothing)."""
    if loss.surrogate.requires_grad or not torch.is_grad_enabled():
        return loss
    return Loss(loss.surrogate.detach().requires_grad_(), loss.metrics)
