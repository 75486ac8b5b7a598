"""Drawing modes: how the guide's draws reach the model, and an engine's own mode runs without core edits."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.poutine.messenger import Messenger

from pplgen.particles import sample_particles
from pplgen.sampling import DETACHED, LEAVES, MODEL_LEAVES, PATHWISE, Drawing

LOC = torch.tensor([0.5, -0.5], requires_grad=True)


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(LOC, 1.0).to_event(1))


def draw(drawing, vectorized=True):
    particles = sample_particles(
        model,
        guide,
        (torch.zeros(3, 2),),
        {},
        num_particles=2,
        max_plate_nesting=1,
        drawing=drawing,
        vectorized=vectorized,
    )
    return particles.guide_trace.nodes["z"]["value"], particles.model_trace.nodes["z"]["value"]


def test_each_mode_gives_the_model_the_draws_it_promises():
    in_guide, in_model = draw(PATHWISE)
    assert in_model is in_guide and in_guide.grad_fn is not None  # gradients pass through the draw
    in_guide, in_model = draw(DETACHED)
    assert in_model is in_guide and not in_guide.requires_grad
    in_guide, in_model = draw(LEAVES)
    assert in_model is in_guide and in_guide.is_leaf and in_guide.requires_grad
    in_guide, in_model = draw(MODEL_LEAVES)
    assert in_guide.grad_fn is not None and in_model.is_leaf and in_model.requires_grad
    assert torch.equal(in_guide, in_model)


class Shifted(Drawing):
    """Every latent moved by 10 after it is drawn: a mode of an engine's own, through its messenger."""

    class Shift(Messenger):
        def _pyro_post_sample(self, msg):
            if not msg["is_observed"]:
                msg["value"] = msg["value"] + 10.0

    def around_guide(self):
        return self.Shift()


def test_an_engines_own_drawing_runs_in_the_sampler():
    in_guide, in_model = draw(Shifted())
    assert (in_guide > 5).all() and in_model is in_guide


def test_a_drawing_that_cannot_be_stacked_is_refused_one_run_at_a_time():
    draw(DETACHED, vectorized=False)
    with pytest.raises(ValueError, match="cannot keep the drawing Leaves"):
        draw(LEAVES, vectorized=False)
    with pytest.raises(TypeError, match="drawing must be a pplgen.sampling.Drawing"):
        draw("detached")
