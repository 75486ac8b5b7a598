"""How the model sees the guide's draws: the drawing modes an engine hands to its particle sampler.

A drawing mode has two hooks that :func:`pplgen.particles.sample_particles`
calls around each run: :meth:`~Drawing.around_guide`, a Pyro messenger (or any
context manager) the guide runs under, and :meth:`~Drawing.for_model`, the
trace of the guide's draws the model replays. The four modes the engines use
are below; an estimator that needs other draws (relaxed samples, coupled
particles) writes its own :class:`Drawing` in its file::

    class Relaxed(Drawing):
        def around_guide(self):
            return RelaxBernoulli(temperature=0.5)  # a Messenger of the engine's own

    particles = self.particles(model, guide, args, kwargs, drawing=Relaxed())
"""

from contextlib import nullcontext

from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class Drawing:
    """Draws as the guide makes them, replayed in the model as they are (gradients flow through
    reparameterized draws). Subclasses override either hook.

    ``stackable``: whether particles drawn one run at a time (:mod:`pplgen.stacked`, for programs that do
    not vectorize) keep what this mode promises; a mode whose values are per-run leaves cannot be stacked.
    """

    stackable = True

    def around_guide(self):
        """The context the guide runs under."""
        return nullcontext()

    def for_model(self, guide_trace):
        """The trace the model replays."""
        return guide_trace

    def __repr__(self):
        return type(self).__name__


class Detached(Drawing):
    """Each draw cut from the autograd graph as it is made, in guide and model alike (score-function
    estimators: no gradient flows through a sample)."""

    def around_guide(self):
        return DetachLatents()


class Leaves(Drawing):
    """Each draw cut as it is made but a fresh leaf that requires grad, so autograd can tell which densities
    each latent reaches (:mod:`pplgen.dependencies`)."""

    stackable = False

    def around_guide(self):
        return DetachLatents(requires_grad=True)


class ModelLeaves(Drawing):
    """The guide keeps its draws' paths; the model sees them as detached leaves that require grad (the
    doubly reparameterized estimator differentiates the two apart)."""

    stackable = False

    def for_model(self, guide_trace):
        copy = poutine.Trace()
        for name, site in guide_trace.nodes.items():
            site = site.copy()
            if site["type"] == "sample" and not site["is_observed"]:
                site["value"] = site["value"].detach().requires_grad_(site["value"].is_floating_point())
            copy.add_node(name, **site)
        return copy


PATHWISE, DETACHED, LEAVES, MODEL_LEAVES = Drawing(), Detached(), Leaves(), ModelLeaves()


class DetachLatents(Messenger):
    """Cuts each latent from the autograd graph as it is drawn.

    Placed *outside* ``poutine.trace``, so the trace and everything the program
    computes from the draw see the detached value. With ``requires_grad`` the
    detached value is a fresh leaf that requires grad (floating-point draws only).

    ``pathwise`` keeps each draw as it was before the cut, by site name.
    """

    def __init__(self, requires_grad=False):
        super().__init__()
        self.requires_grad = requires_grad
        self.pathwise = {}

    def _pyro_post_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        self.pathwise[msg["name"]] = msg["value"]
        value = msg["value"].detach()
        msg["value"] = value.requires_grad_() if self.requires_grad and value.is_floating_point() else value
