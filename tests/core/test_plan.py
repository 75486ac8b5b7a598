"""The plan: a refusal is decided once, from the probe, and every entry path gives ``check``'s verdict."""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch

import pplgen
from pplgen import inference

ROWS = 6
x = torch.linspace(-1.0, 1.0, ROWS * 2).reshape(ROWS, 2)


def verdict(call):
    """The message of the error ``call`` raises, or None when it passes."""
    try:
        call()
    except (ValueError, TypeError) as error:
        return str(error)
    return None


def step(engine, model, guide, *args):
    loss = engine(model, guide, *args)
    loss.surrogate.backward()
    return loss


def sizeless_model(x):
    loc = pyro.param("loc", torch.zeros(2))
    with pyro.plate("data"):
        z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def sizeless_guide(x):
    mean = pyro.param("mean", torch.zeros(2))
    with pyro.plate("data"):
        pyro.sample("z", dist.Normal(mean, 1.0).to_event(1))


def global_model(x):
    """``sizeless_model`` as Pyro runs it: z is drawn once and broadcast over the rows."""
    loc = pyro.param("loc", torch.zeros(2))
    z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def global_guide(x):
    mean = pyro.param("mean", torch.zeros(2))
    pyro.sample("z", dist.Normal(mean, 1.0).to_event(1))


@pytest.mark.parametrize("name", inference.guided_engines())
def test_a_size_less_plate_trains_or_is_refused_in_check(name):
    pyro.clear_param_store()
    engine = inference.get(name)
    refusal = verdict(lambda: engine.check(sizeless_model, sizeless_guide, x))
    if refusal is None:
        pyro.set_rng_seed(0)
        loss = step(engine, sizeless_model, sizeless_guide, x)
        assert torch.isfinite(loss.surrogate)
        assert pyro.param("loc").grad is not None and torch.isfinite(pyro.param("loc").grad).all()
    elif engine.binary_latents_only or engine.discrete_latents_only:
        assert "not a Bernoulli" in refusal
    else:
        assert "pyro.plate('data', len(x))" in refusal or "size the model's plates by the data" in refusal


@pytest.mark.parametrize("name", ["svi", "iwae", "vimco"])
def test_a_size_less_plate_scores_as_pyro_broadcasts_it(name):
    """A latent in a size-less plate is drawn once for all rows: its terms count once, as for a global latent."""
    values = []
    for model, guide in [(sizeless_model, sizeless_guide), (global_model, global_guide)]:
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        values.append(inference.get(name)(model, guide, x).metrics["loss"])
    torch.testing.assert_close(values[0], values[1])


def looping_model(x):
    """Reads its latents row by row (``z[i]``): right for one run, wrong inside a particle plate."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        loc = torch.stack([z[i] for i in range(len(x))])
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def looping_guide(x):
    mean = pyro.param("mean", torch.zeros(len(x), 2))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(mean, 1.0).to_event(1))


def dependent_prior_model(x):
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(a, 1.0).to_event(1))
        pyro.sample("x", dist.Normal(b, 1.0).to_event(1), obs=x)


def dependent_prior_guide(x):
    mean = pyro.param("mean", torch.zeros(2))
    with pyro.plate("data", len(x)):
        pyro.sample("a", dist.Normal(mean, 1.0).to_event(1))
        pyro.sample("b", dist.Normal(mean, 1.0).to_event(1))


def bernoulli_model(x):
    logits = pyro.param("logits", torch.zeros(2))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def indexing_guide(x):
    """Reads its data as indices into a table: right for the data (0, 1, 2), failing on Gaussian dreams."""
    table = pyro.param("table", torch.zeros(3, 2))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.nn.functional.embedding(x[..., 0].long(), table), 1.0).to_event(1))


def gaussian_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def entry_paths(engine, model, guide, *args):
    """The verdicts of ``check``, a direct call, ``pplgen.fit`` and Pyro's ``SVI`` on one pair."""
    import pplgen

    def in_pyro_svi():
        pyro.clear_param_store()
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=engine.differentiable_loss)
        svi.step(*args)

    fresh = type(engine)
    return {
        "check": verdict(lambda: fresh(**engine_options(engine)).check(model, guide, *args)),
        "call": verdict(lambda: step(fresh(**engine_options(engine)), model, guide, *args)),
        "fit": verdict(lambda: pplgen.fit(model, fresh(**engine_options(engine)), args[0], guide=guide, steps=1)),
        "pyro_svi": verdict(in_pyro_svi),
    }


def engine_options(engine):
    return {k: v for k, v in engine.options().items() if k not in ("discriminator",)}


@pytest.mark.parametrize(
    "engine, model, guide, data, refusal",
    [
        (inference.AVB(), looping_model, looping_guide, x, "running the model from its prior"),
        (inference.AVB(), dependent_prior_model, dependent_prior_guide, x, "its prior depends on latent 'a'"),
        (inference.GAN(), bernoulli_model, None, (x > 0).float(), "has no rsample"),
        (inference.IWAE(2, estimator="dreg"), looping_model, looping_guide, x, "estimator='dreg' needs them"),
        (inference.WakeSleep(), gaussian_model, indexing_guide, torch.arange(12.0).reshape(6, 2) % 3, "fails on them"),
    ],
    ids=["avb-prior-run", "avb-dependent-prior", "gan-bernoulli", "iwae-dreg-vectorized", "wake_sleep-dream"],
)
def test_every_entry_path_gives_the_verdict_of_check(engine, model, guide, data, refusal):
    from pplgen.programs import no_guide

    verdicts = entry_paths(engine, model, guide or no_guide, data)
    assert refusal in verdicts["check"]
    assert verdicts == dict.fromkeys(verdicts, verdicts["check"])


@pytest.mark.parametrize("engine", [inference.IWAE(2), inference.RWS(2), inference.VIMCO(2)], ids=str)
def test_a_program_that_does_not_vectorize_trains_one_run_per_particle_on_every_path(engine):
    """The first step finds, as ``check`` does, that the particles must run one at a time."""
    verdicts = entry_paths(engine, looping_model, looping_guide, x)
    assert verdicts == dict.fromkeys(verdicts)
    engine.prepare(looping_model, looping_guide, x)
    engine(looping_model, looping_guide, x)
    assert engine.plan.vectorized is False


def semi_supervised_model(x, y=None):
    logits = pyro.param("class_logits", torch.zeros(3))
    with pyro.plate("data", len(x)):
        label = pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        loc = label.float().unsqueeze(-1).expand(*label.shape, 2)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def semi_supervised_guide(x, y=None):
    logits = pyro.param("guide_logits", torch.zeros(3))
    if y is None:
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})


@pytest.mark.parametrize("name", inference.guided_engines())
def test_a_site_first_seen_at_a_later_batch_gets_the_verdict_of_check(name):
    """A labelled batch first (no guide site), then an unlabelled one whose guide site asks for enumeration."""
    pyro.clear_param_store()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    engine = inference.get(name)
    first = verdict(lambda: step(engine, semi_supervised_model, semi_supervised_guide, x, labels))
    if first is not None:  # engines that need latents refuse the labelled batch already, in check too
        assert first == verdict(
            lambda: inference.get(name).check(semi_supervised_model, semi_supervised_guide, x, labels)
        )
        return
    expected = verdict(lambda: inference.get(name).check(semi_supervised_model, semi_supervised_guide, x))
    if engine.sums_out_guide_enumeration:  # svi sums y out on that batch, as TraceEnum_ELBO does
        assert expected is None
    else:
        assert expected is not None and "guide site 'y' asks to be enumerated" in expected
    assert verdict(lambda: step(engine, semi_supervised_model, semi_supervised_guide, x)) == expected


def test_check_leaves_the_engine_as_it_was():
    engine = inference.get("nvil")

    def model(x):
        with pyro.plate("data", len(x)):
            h = pyro.sample("h", dist.Bernoulli(logits=torch.zeros(3)).to_event(1))
            pyro.sample("x", dist.Normal(h[..., :2], 1.0).to_event(1), obs=x)

    def guide(x):
        logits = pyro.param("h_logits", torch.zeros(3))
        with pyro.plate("data", len(x)):
            pyro.sample("h", dist.Bernoulli(logits=logits).to_event(1))

    before = {k: v for k, v in vars(engine).items() if not k.startswith("_")}
    engine.check(model, guide, x)
    assert engine.baseline.has_uninitialized_params()
    assert {k: v for k, v in vars(engine).items() if not k.startswith("_")} == before
    engine.prepare(model, guide, x)
    assert not engine.baseline.has_uninitialized_params()
    assert engine.plan is not None


def labelled_model(x, y=None):
    """A latent z for every row; the class y observed on labelled batches, drawn on the others."""
    w = pyro.param("w", torch.zeros(3, 2))
    with pyro.plate("data", len(x)):
        label = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)), obs=y)
        z = pyro.sample("z", dist.Normal(w[label], 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def labelled_guide(x, y=None):
    with pyro.plate("data", len(x)):
        if y is None:
            pyro.sample("y", dist.Categorical(logits=pyro.param("guide_logits", torch.zeros(3))))
        pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(2)) + x, 1.0).to_event(1))


def alternating_steps(step, count, seed):
    """``count`` steps alternating a labelled and an unlabelled batch of the same rows; their losses."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    pyro.set_rng_seed(seed)
    return [step.step(x, labels)["loss"] if i % 2 == 0 else step.step(x)["loss"] for i in range(count)]


def test_nvil_keeps_a_baseline_per_site_set_trains_each_and_resumes_them():
    """The labelled batches' site set (z drawn, x and y observed) and the unlabelled one's (y and z drawn) get
    a baseline and statistics each, both stepped by the loop's optimizer; a step object resumed from a
    checkpoint of both continues as the uninterrupted one."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    step = pplgen.TrainingStep(labelled_model, labelled_guide, inference.get("nvil", baseline=(4,)), lr=0.05)
    alternating_steps(step, 2, seed=1)
    assert list(step.engine.other_site_sets) == ["2x2"]  # x only; y and z drawn
    second = step.engine.other_site_sets["2x2"].baseline
    before = [p.detach().clone() for p in second.parameters()]
    state = copy.deepcopy(step.state_dict())
    straight = alternating_steps(step, 4, seed=2)
    assert all(not torch.equal(a, b) for a, b in zip(before, second.parameters()))

    pyro.clear_param_store()
    resumed = pplgen.TrainingStep(labelled_model, labelled_guide, inference.get("nvil", baseline=(4,)), lr=0.05)
    resumed.setup(x, torch.tensor([0, 1, 2, 0, 1, 2]))
    resumed.load_state_dict(state)
    assert alternating_steps(resumed, 4, seed=2) == straight
