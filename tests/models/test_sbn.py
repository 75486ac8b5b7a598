"""Sigmoid belief nets and the Helmholtz machine: program shape, vectorized particles,
the smoke matrix of every engine on every model family, and refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pplgen
from pplgen import UnsupportedModelError
from pplgen.inference import get, score_function_engines
from pplgen.models import VAE, HelmholtzMachine, SigmoidBeliefNet
from pplgen.particles import sample_particles
from pplgen.probe import probe_pair

SCORE_FUNCTION_ENGINES = ["wake_sleep", "rws", "nvil", "vimco"]


def binary_data(n=40, d=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=generator).round()


def test_score_function_engines_are_registered():
    """Those that train every family below; engines of binary latents only (disarm) and relaxation engines are
    tested on their own."""
    assert sorted(score_function_engines()) == sorted(SCORE_FUNCTION_ENGINES)


def test_program_sites_and_shapes():
    sbn = SigmoidBeliefNet(layers=(5, 4, 3), observed=12)
    x = binary_data(7)
    model_trace = poutine.trace(sbn.model).get_trace(x)
    guide_trace = poutine.trace(sbn.guide).get_trace(x)
    assert [n for n in guide_trace.stochastic_nodes if n != "data"] == ["h1", "h2", "h3"]
    assert [n for n in model_trace.stochastic_nodes if n != "data"] == ["h3", "h2", "h1"]
    assert model_trace.nodes["x"]["is_observed"]
    for name, size in zip(("h1", "h2", "h3"), (5, 4, 3)):
        assert guide_trace.nodes[name]["value"].shape == (7, size)
        assert set(guide_trace.nodes[name]["value"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("nonlinear", [False, True])
def test_vectorized_particles_sit_outside_the_data_plate(nonlinear):
    sbn = SigmoidBeliefNet(layers=(5, 3), observed=12, nonlinear=nonlinear, hidden=(6,))
    particles = sample_particles(sbn.model, sbn.guide, (binary_data(7),), {}, num_particles=4, max_plate_nesting=1)
    assert particles.guide_trace.nodes["h2"]["value"].shape == (4, 7, 3)
    assert particles.model_trace.nodes["x"]["fn"].batch_shape == (4, 7)


def test_sample_and_reconstruct_give_pixel_means():
    sbn = SigmoidBeliefNet(layers=(5, 3), observed=12)
    assert sbn.sample(6).shape == (6, 12)
    reconstruction = sbn.reconstruct(binary_data(9))
    assert reconstruction.shape == (9, 12) and ((reconstruction > 0) & (reconstruction < 1)).all()


def test_helmholtz_machine_is_a_linear_sigmoid_belief_net():
    machine = HelmholtzMachine(layers=(5, 3), observed=12)
    assert isinstance(machine, SigmoidBeliefNet) and not machine.nonlinear
    assert all(isinstance(layer, torch.nn.Linear) for layer in [*machine.generative, *machine.recognition])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layers": ()}, "layers must be a non-empty sequence of positive ints"),
        ({"layers": (5, 0)}, "layers must be a non-empty sequence of positive ints"),
        ({"observed": 0}, "observed must be a positive int"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        SigmoidBeliefNet(**{"layers": (3,), "observed": 12, **options})


def test_data_of_the_wrong_shape_is_named():
    sbn = SigmoidBeliefNet(layers=(3,), observed=12)
    with pytest.raises(ValueError, match=r"expects binary data of shape \(batch, 12\), got \(4, 3, 4\)"):
        sbn.model(torch.zeros(4, 3, 4))


def test_local_signals_follow_the_layers():
    """Each guide layer's signal holds the terms that layer and the layers above it can move (NVIL §3.3)."""
    sbn = SigmoidBeliefNet(layers=(5, 4, 3), observed=12)
    downstream = probe_pair(sbn.model, sbn.guide, (binary_data(6),), {}).downstream
    assert downstream.model == {
        "h1": {"x", "h1", "h2", "h3"},
        "h2": {"h1", "h2", "h3"},
        "h3": {"h2", "h3"},
    }
    assert downstream.guide == {"h1": {"h1", "h2", "h3"}, "h2": {"h2", "h3"}, "h3": {"h3"}}


MODEL_FAMILIES = {
    "sbn": lambda: SigmoidBeliefNet(layers=(6, 4), observed=12),
    "sbn-nonlinear": lambda: SigmoidBeliefNet(layers=(6, 4), observed=12, nonlinear=True, hidden=(8,)),
    "helmholtz": lambda: HelmholtzMachine(layers=(6,), observed=12),
    "vae": lambda: VAE(data_dim=12, latent_dim=3, hidden=(8,)),
}


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
@pytest.mark.parametrize("name", SCORE_FUNCTION_ENGINES)
def test_every_score_function_engine_trains_every_family(name, family):
    torch.manual_seed(0)
    module = MODEL_FAMILIES[family]()
    before = [p.detach().clone() for p in module.parameters()]
    result = pplgen.fit(module, name, binary_data(), steps=3, batch_size=10)
    assert len(result.history) >= 1 and all(torch.isfinite(torch.tensor(result.metric("loss"))))
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("name", ["svi", "iwae", "avb"])
def test_reparameterized_engines_refuse_belief_nets_and_name_the_alternatives(name):
    sbn = SigmoidBeliefNet(layers=(6, 4), observed=12)
    message = rf"site 'h1' is a Bernoulli and has no rsample: {name} cannot differentiate through it; use wake_sleep, rws, nvil, vimco"
    with pytest.raises(UnsupportedModelError, match=message):
        pplgen.fit(sbn, name, binary_data(), steps=1, batch_size=10)


def test_nvil_resumes_exactly_from_a_checkpoint(tmp_path):
    """The baseline and the running statistics are saved and restored with the engine."""
    data = binary_data()

    def run(resume=False, **options):
        torch.manual_seed(0)
        return pplgen.fit(
            SigmoidBeliefNet(layers=(6, 4), observed=12),
            get("nvil", baseline=(5,)),
            data,
            batch_size=10,
            **options,
            checkpoint=pplgen.Checkpointing(tmp_path / "run.pt", resume=resume),
        )

    straight = run(epochs=2)
    (tmp_path / "run.pt").unlink()
    run(epochs=1)
    resumed = run(epochs=2, resume=True)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]


def test_nvil_baseline_needs_observed_data():
    def model(x):
        pyro.sample("h", dist.Bernoulli(x.new_full((3,), 0.5)).to_event(1))

    def guide(x):
        pyro.sample("h", dist.Bernoulli(x.new_full((3,), 0.5)).to_event(1))

    with pytest.raises(UnsupportedModelError, match="the model observes no site .*use baseline=None"):
        get("nvil").check(model, guide, torch.zeros(2))
    get("nvil", baseline=None).check(model, guide, torch.zeros(2))
