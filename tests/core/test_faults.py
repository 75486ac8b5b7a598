"""Faults that must stop a fit with a named reason, before any work is lost or mislabelled.

Each test failed before its fix.
"""

import math
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pplgen
from pplgen import NonFiniteLossError, fit
from pplgen.checkpoints import CheckpointError
from pplgen.options import Checkpointing, Optimization
from pplgen.step import TrainingStep
from tests.support.cases import binary_data, small_vae


class ExplodesOnSecondStep(torch.optim.SGD):
    """An update that sends a weight to inf while the loss that led to it was finite."""

    def step(self, closure=None):
        super().step(closure)
        self.state.setdefault("count", 0)
        self.state["count"] += 1
        if self.state["count"] == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))


def test_an_update_that_makes_a_parameter_non_finite_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError, match=r"step 2: engine 'svi' made model parameter 0 non-finite"):
        fit(
            small_vae(),
            "svi",
            binary_data(),
            epochs=3,
            batch_size=64,
            optimization=Optimization(optimizer=ExplodesOnSecondStep),
            checkpoint=path,
        )
    state = torch.load(path, weights_only=True)
    assert state["progress"]["epoch"] == 1
    weights = [v for module in state["trainer"]["modules"].values() for v in module.values() if v.is_floating_point()]
    assert all(torch.isfinite(w).all() for w in weights)


@pytest.mark.parametrize(
    "changed", [{"optimization": {"lr": 1e-2}}, {"seed": 7}, {"batch_size": 32}], ids=["lr", "seed", "batch_size"]
)
def test_resume_with_changed_settings_is_refused_by_name(tmp_path, changed):
    path = tmp_path / "checkpoint.pt"
    settings = {"optimization": {"lr": 1e-3}, "seed": 0, "batch_size": 16}
    fit(small_vae(), "svi", binary_data(), epochs=1, **settings, checkpoint=path)
    ((name, value),) = changed.items()
    if name == "optimization":
        name, value = "lr", 1e-2
    with pytest.raises(CheckpointError, match=rf"other settings \({name} was .*, now .*{value}"):
        fit(
            small_vae(),
            "svi",
            binary_data(),
            epochs=2,
            **{**settings, **changed},
            checkpoint=Checkpointing(path, resume=True),
        )


def test_resume_on_other_data_is_refused_naming_the_data(tmp_path):
    """The same shape, one value changed: the hash of the contents tells the data apart."""
    path = tmp_path / "checkpoint.pt"
    fit(small_vae(), "svi", binary_data(), epochs=1, batch_size=16, checkpoint=path)
    other = binary_data()
    other[0, 0] = 1 - other[0, 0]
    with pytest.raises(CheckpointError, match=r"other settings \(data was '\(64, 16\) float32, sha256 \w+', now"):
        fit(small_vae(), "svi", other, epochs=2, batch_size=16, checkpoint=Checkpointing(path, resume=True))


def test_an_existing_checkpoint_is_not_replaced_without_resume_or_overwrite(tmp_path):
    path = tmp_path / "checkpoint.pt"
    fit(small_vae(), "svi", binary_data(), epochs=1, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="already exists: pass resume=True .* or overwrite=True"):
        fit(small_vae(), "svi", binary_data(), epochs=1, checkpoint=path)
    assert path.read_bytes() == before
    fit(small_vae(seed=3), "svi", binary_data(), epochs=1, checkpoint=Checkpointing(path, overwrite=True))
    assert path.read_bytes() != before


class Payload:
    def __reduce__(self):
        return (exec, ("raise SystemExit('the checkpoint ran code')",))


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda good: good[: len(good) // 2], "is truncated or is not a checkpoint"),
        (lambda good: b"not a checkpoint at all", "is truncated or is not a checkpoint|holds objects other than"),
        (lambda good: pickle.dumps(Payload()), "is truncated or is not a checkpoint|holds objects other than tensors"),
    ],
    ids=["truncated", "foreign", "malicious"],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_broken_checkpoint_is_one_named_line_without_unpickling_advice(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    fit(small_vae(), "svi", binary_data(), epochs=1, checkpoint=path)
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as caught:
        fit(small_vae(), "svi", binary_data(), epochs=2, checkpoint=Checkpointing(path, resume=True))
    text = str(caught.value)
    assert "\n" not in text and "weights_only" not in text and str(path) in text


def test_grey_data_are_refused_whole_with_the_row_and_a_binarize_hint():
    """Only row 50 is grey: the first batch is binary, so a check of the first batch alone let it through."""
    x = binary_data(n=64)
    x[50, 3] = 0.4
    with pytest.raises(ValueError, match=r"site 'x' observes the data with a Bernoulli.* first at row 50: binarize"):
        fit(small_vae(), "svi", x, epochs=1, batch_size=16)


@pytest.mark.parametrize(
    "held_out, message",
    [
        (torch.ones(8, 17), "the evaluation data cannot be scored by the model: the model fails"),
        (torch.full((8, 16), 0.5), "the evaluation data cannot be scored by the model: site 'x' observes"),
    ],
    ids=["785 columns", "grey"],
)
def test_evaluation_data_the_model_cannot_score_are_refused_before_the_first_step(tmp_path, held_out, message):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(ValueError, match=message):
        fit(small_vae(), "svi", binary_data(), epochs=1, batch_size=16, evaluation=held_out, checkpoint=path)
    assert not path.exists()


def test_a_site_built_with_validate_args_false_scores_grey_data_as_its_author_asked():
    """Pyro's VAE example scores grey digits with ``Bernoulli(..., validate_args=False)``: the cross-entropy it
    asks for is trained, not refused."""

    def model(x):
        logits = pyro.param("logits", torch.zeros(x.shape[1]))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    grey = torch.rand(32, 6, generator=torch.Generator().manual_seed(0))
    result = fit(model, "svi", grey, guide=guide, steps=3, batch_size=16)
    assert all(math.isfinite(loss) for loss in result.metric("loss"))


@pytest.mark.parametrize(
    "data, message",
    [
        (torch.zeros(0, 16), "data is empty"),
        (binary_data().to(torch.uint8), "The arguments hold torch.uint8: give the data the dtype"),
        (binary_data().half(), "The arguments hold torch.float16: give the data the dtype"),
    ],
    ids=["empty", "uint8", "float16"],
)
def test_data_of_the_wrong_kind_are_named(data, message):
    with pytest.raises(ValueError, match=message):
        fit(small_vae(), "svi", data, epochs=1)


@pytest.mark.parametrize(
    "option, value",
    [
        ("accelerator", "bogus"),
        ("devices", 0),
        ("strategy", "bogus"),
        ("precision", "8-true"),
        ("strategy", "ddp_spawn"),
        ("strategy", "fsdp"),
    ],
)
def test_a_bogus_device_option_is_named(option, value):
    devices = {"devices": 2} if value == "ddp_spawn" else {}
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        fit(small_vae(), "svi", binary_data(), epochs=1, execution={option: value, **devices})


def test_a_model_that_observes_nothing_is_refused_when_given_data():
    def model(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide(x):
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    for engine in ("svi", "rws"):
        with pytest.raises(ValueError, match="the model observes no site .* the data given to fit are never scored"):
            fit(model, engine, binary_data(), guide=guide, epochs=1)


@pytest.mark.parametrize(
    "wrap", [TensorDataset, lambda *t: DataLoader(TensorDataset(*t), batch_size=16)], ids=["Dataset", "DataLoader"]
)
def test_grey_rows_past_the_first_batch_of_a_dataset_are_refused_before_they_are_trained_on(wrap):
    """Only row 50 is grey: batches 0-2 train, batch 3 (which holds it) is refused naming its row."""
    x = binary_data(n=64)
    x[50, 3] = 0.4
    steps = []
    real = TrainingStep.step

    def counted(self, *args, **kwargs):
        steps.append(args[0].clone())
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingStep, "step", counted)
        with pytest.raises(
            ValueError, match=r"batch \d of epoch 0 .*site 'x' observes the data with a Bernoulli.*binarize"
        ):
            fit(small_vae(), "svi", wrap(x), epochs=1, batch_size=16)
    assert all(((batch == 0) | (batch == 1)).all() for batch in steps)


def test_particles_beyond_the_free_memory_are_refused_before_anything_is_allocated(monkeypatch):
    """1,000 particles of a 16-pixel VAE at batch 16 need at least 2.5 MB for their site values and densities;
    with 1 MB free the fit is refused by name, with the largest count that fits."""
    monkeypatch.setattr("pplgen.memory.available_bytes", lambda device: 10**6)
    with pytest.raises(
        ValueError, match=r"iwae with num_particles=1000 needs at least .* GB .* use at most \d+ particles"
    ):
        fit(small_vae(), pplgen.inference.get("iwae", num_particles=1000), binary_data(), steps=1, batch_size=16)


def test_a_step_the_allocator_refuses_is_one_line(monkeypatch):
    def refused(self, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 31360000000 bytes.\n(more)"
        )

    monkeypatch.setattr(TrainingStep, "step", refused)
    with pytest.raises(
        ValueError, match=r"^step 1 could not get its memory \(\[enforce fail .*\); use fewer particles"
    ) as caught:
        fit(small_vae(), "svi", binary_data(), steps=1, batch_size=16)
    assert "\n" not in str(caught.value)
