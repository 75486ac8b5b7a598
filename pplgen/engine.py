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
* helper parameters ψ (the engine's own submodules: baselines,
  discriminators): the gradient of the helper's own fitting loss,

each routed to its role with ``detach()`` inside the one scalar. So a training
loop, an optimizer, a scheduler or DDP sees only a module that returns a loss,
and swapping engines is swapping one object.

``loss.metrics`` maps documented names (each engine's ``metric_names``) to
detached scalar tensors; ``"loss"`` is always among them.

Before training, :meth:`Engine.check` runs the pair once and raises
:class:`UnsupportedModelError` naming the offending site and the engines that
can handle it.
"""

from typing import ClassVar, NamedTuple

import torch

from pplgen.particles import guess_max_plate_nesting, sample_particles


class Loss(NamedTuple):
    """What an engine returns: a surrogate to differentiate and named metrics."""

    surrogate: torch.Tensor
    metrics: dict[str, torch.Tensor]


class UnsupportedModelError(ValueError):
    """An engine cannot train this model/guide pair; the message says why and what can."""


class Engine(torch.nn.Module):
    """Base class of inference engines. Subclasses set ``name`` and
    ``metric_names`` and implement :meth:`forward` (and :meth:`check` when
    they refuse some programs)."""

    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]

    def forward(self, model, guide, *args, **kwargs) -> Loss:
        raise NotImplementedError

    def check(self, model, guide, *args, **kwargs) -> None:
        """Raise :class:`UnsupportedModelError` if this engine cannot train the pair."""

    def helper_losses(self, model, guide, *args, **kwargs):
        """Losses of the helpers alone (e.g. extra discriminator steps), each to be given one optimizer
        step before the step of :meth:`forward`; none by default. Evaluated lazily, one after another."""
        return ()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())

    def options(self) -> dict:
        """The constructor options, for ``repr`` and run records."""
        return {}


class ParticleEngine(Engine):
    """An engine that scores K vectorized guide particles under the model.

    Holds the options every such engine shares and runs the particles through
    :func:`pplgen.particles.sample_particles`; ``max_plate_nesting`` is found by
    running the program once when not given.
    """

    reparameterized: ClassVar[bool]
    #: Whether the engine trains guides whose sites have no density (``Implicit`` samplers).
    implicit_guides: ClassVar[bool] = False

    def __init__(self, num_particles, max_plate_nesting=None):
        super().__init__()
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if max_plate_nesting is not None and (not isinstance(max_plate_nesting, int) or max_plate_nesting < 0):
            raise ValueError(f"max_plate_nesting must be a non-negative int or None, got {max_plate_nesting!r}")
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting

    def particles(self, model, guide, args, kwargs, *, num_particles=None, latents="pathwise"):
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        return sample_particles(
            model,
            guide,
            args,
            kwargs,
            num_particles=num_particles or self.num_particles,
            max_plate_nesting=self.max_plate_nesting,
            latents=latents,
        )

    def check(self, model, guide, *args, **kwargs):
        # Imported here: the checks raise this module's errors, and the registry imports the engines.
        from pplgen.checks import check_explicit_guide, check_pair, check_reparameterizable
        from pplgen.inference import score_function_engines

        try:
            particles = self.particles(model, guide, args, kwargs, num_particles=1)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{self.name}: model and guide fail when run together on these arguments: {error}") from error
        check_pair(particles)
        if not self.implicit_guides:
            check_explicit_guide(particles, self.name)
        if self.reparameterized:
            check_reparameterizable(particles, self.name, score_function_engines())
        return particles

    def options(self):
        return {"num_particles": self.num_particles}
