"""pplgen.fit: reproducibility, checkpoints, resume, roles, named errors."""

import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pplgen
from pplgen import NonFiniteLossError, fit
from pplgen.inference import SVI
from pplgen.models import VAE
from pplgen.options import Checkpointing, Evaluation, Execution, Optimization
from tests.support.cases import binary_data, small_vae
from tests.support.linear_gaussian import LinearGaussian


def losses(result):
    return [row["loss"] for row in result.history]


def test_same_seed_same_history():
    first = fit(small_vae(), "svi", binary_data(), epochs=2, batch_size=16, seed=3)
    second = fit(small_vae(), "svi", binary_data(), epochs=2, batch_size=16, seed=3)
    third = fit(small_vae(), "svi", binary_data(), epochs=2, batch_size=16, seed=4)
    assert losses(first) == losses(second)
    assert losses(first) != losses(third)


@pytest.mark.parametrize("stop", [{"epochs": 2}, {"steps": 7}], ids=["epoch-boundary", "mid-epoch"])
@pytest.mark.parametrize("engine", ["svi", "iwae"])
def test_resume_continues_exactly(tmp_path, stop, engine):
    options = dict(batch_size=16, seed=5, evaluation=Evaluation(binary_data(8, seed=9), samples=4))
    whole = fit(small_vae(), engine, binary_data(), epochs=4, **options)
    path = tmp_path / "run" / "checkpoint.pt"
    fit(small_vae(), engine, binary_data(), **stop, **options, checkpoint=path)
    resumed = fit(
        small_vae(seed=123), engine, binary_data(), epochs=4, **options, checkpoint=Checkpointing(path, resume=True)
    )
    assert losses(resumed) == losses(whole)
    assert resumed.evaluations == whole.evaluations
    for a, b in zip(whole.model.__self__.parameters(), resumed.model.__self__.parameters()):
        assert torch.equal(a, b)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_checkpoint_loads_without_pickled_code(tmp_path):
    path = tmp_path / "checkpoint.pt"
    vae = small_vae()
    fit(vae, "svi", binary_data(), epochs=1, batch_size=16, checkpoint=path)
    state = torch.load(path, weights_only=True)
    assert state["engine_name"] == "svi"
    for name, value in vae.state_dict().items():
        assert torch.equal(state["trainer"]["modules"]["model"][name], value)


def test_resume_with_another_engine_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    fit(small_vae(), "svi", binary_data(), epochs=1, batch_size=16, checkpoint=path)
    with pytest.raises(ValueError, match="written by engine 'svi', not 'iwae'"):
        fit(small_vae(), "iwae", binary_data(), epochs=2, batch_size=16, checkpoint=Checkpointing(path, resume=True))


def test_resume_with_another_architecture_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    fit(small_vae(), "svi", binary_data(), epochs=1, batch_size=16, checkpoint=path)
    other = VAE(data_dim=16, latent_dim=4, hidden=(12,))
    with pytest.raises(ValueError, match="checkpoint.pt does not fit this model, guide and engine"):
        fit(other, "svi", binary_data(), epochs=2, batch_size=16, checkpoint=Checkpointing(path, resume=True))


class BreaksAtStep(SVI):
    """svi whose ELBO turns NaN from a given call on."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, model, guide, *args, **kwargs):
        self.calls += 1
        loss = super().forward(model, guide, *args, **kwargs)
        if self.calls >= self.at:
            loss.metrics["elbo"] = loss.metrics["elbo"] * float("nan")
            return pplgen.Loss(loss.surrogate * float("nan"), loss.metrics)
        return loss


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    vae = small_vae()
    with pytest.raises(
        NonFiniteLossError, match=r"step 6: engine 'svi' .*metric 'elbo' = nan.*checkpoint\.pt, is intact"
    ):
        fit(vae, BreaksAtStep(at=6), binary_data(), epochs=3, batch_size=16, checkpoint=path)
    state = torch.load(path, weights_only=True)
    assert state["progress"] == {"epoch": 1, "skip": 0, "loader": None}
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert not list(tmp_path.glob("*.tmp*"))


def test_roles_and_per_role_learning_rates():
    vae = small_vae()
    result = fit(vae, "svi", binary_data(), steps=1, optimization=Optimization(lr={"model": 1e-2, "guide": 1e-4}))
    groups = {g["role"]: g for g in result.training_step.optimizer.param_groups}
    assert groups["model"]["lr"] == 1e-2 and groups["guide"]["lr"] == 1e-4
    assert {id(p) for p in groups["model"]["params"]} == {id(p) for p in vae.decoder.parameters()}
    assert {id(p) for p in groups["guide"]["params"]} == {id(p) for p in vae.encoder.parameters()}


DECODER = torch.nn.Linear(1, 2)


def plain_model(x):
    decoder = pyro.module("decoder", DECODER)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)


def plain_guide(x):
    loc = pyro.param("loc", torch.zeros(1))
    scale = pyro.param("scale", torch.ones(1), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc, scale).expand([len(x), 1]).to_event(1))


def test_plain_function_programs_are_trained_and_checkpointed(tmp_path):
    x = torch.randn(32, 2) + torch.tensor([2.0, -1.0])
    path = tmp_path / "checkpoint.pt"
    result = fit(
        plain_model,
        "svi",
        x,
        guide=plain_guide,
        epochs=30,
        batch_size=32,
        optimization=Optimization(lr=0.05),
        checkpoint=path,
    )
    roles = result.training_step.roles
    assert len(roles["model"]) == 2 and len(roles["guide"]) == 2
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 10
    store = torch.load(path, weights_only=True)["trainer"]["param_store"]
    assert set(store) == {"decoder$$$weight", "decoder$$$bias", "loc", "scale"}
    assert torch.allclose(store["scale"], pyro.param("scale").unconstrained())


def test_dataset_and_dataloader_data():
    x = binary_data()
    from_dataset = fit(small_vae(), "svi", TensorDataset(x), epochs=1, batch_size=16)
    from_tensor = fit(small_vae(), "svi", x, epochs=1, batch_size=16)
    assert losses(from_dataset) == losses(from_tensor)
    from_loader = fit(small_vae(), "svi", DataLoader(TensorDataset(x), batch_size=8), epochs=1)
    assert len(from_loader.history) == 8


def test_short_run_on_linear_gaussian_reaches_exact_evidence():
    """Model and guide of the conjugate model are learnable: the ELBO climbs to the evidence."""
    torch.manual_seed(0)
    truth = LinearGaussian()
    x = truth.w.detach() * torch.randn(512, 2) + truth.b.detach() + truth.sigma * torch.randn(512, 2)
    result = fit(LinearGaussian(), "svi", x, epochs=60, batch_size=128, optimization=Optimization(lr=0.05))
    learned = result.model.__self__
    gap = learned.log_evidence(x).mean() - learned.analytic_elbo(x).mean()
    assert gap.item() < 0.02


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: fit(small_vae(), "svi", [[0.0] * 16], epochs=1), TypeError, "data must be a torch.Tensor .* got list"),
        (
            lambda: fit(small_vae(), "svi", torch.full((4, 16), float("nan")), epochs=1),
            ValueError,
            "non-finite values .* 4 rows, first at row 0",
        ),
        (
            lambda: fit(small_vae(), "svi", torch.ones(4, 10), epochs=1),
            ValueError,
            r"expects data of shape \(batch, 16\), got \(4, 10\)",
        ),
        (lambda: fit(small_vae(), "svi", binary_data()), ValueError, "give epochs=... or steps=..."),
        (lambda: fit(small_vae(), "svi", binary_data(), epochs=0), ValueError, "epochs must be a positive int"),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, optimization=Optimization(lr={"decoder": 1.0})),
            ValueError,
            "lr has unknown roles",
        ),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, optimization=Optimization(lr=float("nan"))),
            ValueError,
            "lr must be a finite positive number",
        ),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, optimization=Optimization(lr=float("inf"))),
            ValueError,
            "lr must be a finite positive number",
        ),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, optimization=Optimization(lr={"guide": -1e-3})),
            ValueError,
            r"lr\['guide'\] must be a finite positive",
        ),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, optimization=Optimization(lr={"model": True})),
            ValueError,
            r"lr\['model'\] must be a finite positive",
        ),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, optimization=Optimization(optimizer="adam")),
            TypeError,
            "optimizer must be a torch.optim.Optimizer class",
        ),
        (
            lambda: fit(small_vae(), "svi", binary_data(), epochs=1, checkpoint=3),
            TypeError,
            "checkpoint must be a Checkpointing, a dict of its options, a str or a Path, got int",
        ),
        (lambda: fit(small_vae(), "nuts", binary_data(), epochs=1), ValueError, "unknown engine 'nuts'"),
        (lambda: fit(lambda x: None, "svi", binary_data(), epochs=1), TypeError, "no guide given"),
    ],
    ids=[
        "list",
        "nan",
        "shape",
        "no-length",
        "zero-epochs",
        "role",
        "lr-nan",
        "lr-inf",
        "lr-negative-role",
        "lr-bool",
        "optimizer",
        "resume",
        "engine",
        "guide",
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_named():
    with pytest.raises(ValueError, match="accelerator='cuda'.*cannot run here"):
        fit(small_vae(), "svi", binary_data(), epochs=1, execution=Execution(accelerator="cuda"))


def test_fit_leaves_the_callers_random_states_and_threads_as_it_found_them():
    vae, x = small_vae(), binary_data()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = random.random(), np.random.rand(), torch.rand(()).item()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    pplgen.fit(vae, "svi", x, steps=2, seed=11)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected
    assert torch.get_num_threads() == threads


def counts_of_a_fixed_number_of_groups(num_groups, counts):
    """Arguments as Pyro's tutorials pass them: a plain int first, the data after it."""
    rate = pyro.param("rate", torch.ones(num_groups), constraint=dist.constraints.positive)
    with pyro.plate("rows", len(counts)):
        pyro.sample("counts", dist.Poisson(rate).to_event(1), obs=counts)


def fixed_observation():
    """A program of no arguments observing a constant, as the enumeration tutorial's are."""
    loc = pyro.param("loc", torch.tensor(0.0))
    pyro.sample("x", dist.Normal(loc, 1.0), obs=torch.tensor(2.0))


def nothing(*args):
    pass


@pytest.mark.parametrize(
    "model, data, rows",
    [(counts_of_a_fixed_number_of_groups, (3, torch.ones(5, 3)), 5), (fixed_observation, (), 1)],
    ids=["int first", "no arguments"],
)
def test_programs_whose_first_argument_is_not_the_data_train_with_the_rows_of_the_data(model, data, rows):
    pyro.clear_param_store()
    result = fit(model, "svi", data, guide=nothing, steps=2)
    assert [row["batch_size"] for row in result.history] == [rows, rows]


@pytest.mark.parametrize(
    "generator", [None, lambda: torch.Generator().manual_seed(11)], ids=["global RNG", "its own generator"]
)
@pytest.mark.parametrize("stop", [3, 4, 6], ids=["mid-epoch", "epoch boundary", "mid second epoch"])
def test_a_shuffling_dataloader_resumes_exactly(tmp_path, generator, stop):
    """A DataLoader that draws its own shuffle (from the global RNG or its generator), stopped at ``stop`` steps
    of 4 per epoch and resumed with a fresh loader built alike: the losses are the uninterrupted run's."""

    def loader():
        return DataLoader(
            TensorDataset(binary_data()), batch_size=16, shuffle=True, generator=generator and generator()
        )

    whole = fit(small_vae(), "svi", loader(), steps=9, seed=2)
    path = tmp_path / "checkpoint.pt"
    fit(small_vae(), "svi", loader(), steps=stop, seed=2, checkpoint=path)
    resumed = fit(small_vae(seed=7), "svi", loader(), steps=9, seed=2, checkpoint=Checkpointing(path, resume=True))
    assert losses(resumed) == losses(whole)
