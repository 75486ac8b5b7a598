"""fit's option groups: each checks its values when built, and fit takes a group, a dict of its fields or
the group's shorthand."""

import pytest
import torch

import pplgen
from pplgen.options import Checkpointing, Evaluation, Execution, Optimization, as_options
from tests.support.cases import binary_data, small_vae


def test_a_dict_and_a_shorthand_build_the_group():
    assert as_options(Optimization, {"lr": 0.1, "clip_norm": 2.0}, "optimization") == Optimization(
        lr=0.1, clip_norm=2.0
    )
    x = torch.zeros(3, 2)
    assert as_options(Evaluation, x, "evaluation", (torch.Tensor,)).data is x
    assert as_options(Checkpointing, "runs/a.pt", "checkpoint", (str,)).path.name == "a.pt"
    assert as_options(Execution, None, "execution") is None


@pytest.mark.parametrize(
    "build, error, message",
    [
        (
            lambda: as_options(Optimization, {"learning_rate": 0.1}, "optimization"),
            TypeError,
            "has no option 'learning_rate'",
        ),
        (
            lambda: as_options(Execution, 3, "execution"),
            TypeError,
            "execution must be an Execution or a dict of its options, got int",
        ),
        (lambda: Optimization(lr=0.0), ValueError, "lr must be a finite positive number"),
        (lambda: Optimization(scheduler=3), TypeError, "scheduler must be a callable"),
        (lambda: Execution(num_nodes=0), ValueError, "num_nodes must be a positive int"),
        (lambda: Execution(strategy="fsdp"), ValueError, "strategy='fsdp' is not one fit runs"),
        (lambda: Evaluation([1.0, 2.0]), TypeError, "evaluation data must be a torch.Tensor"),
        (lambda: Evaluation(torch.zeros(2), samples=0), ValueError, "evaluation samples must be a positive int"),
        (lambda: Checkpointing("c.pt", every=True), ValueError, "checkpoint every must be a positive int"),
    ],
    ids=["unknown-field", "wrong-type", "lr", "scheduler", "nodes", "strategy", "data", "samples", "every"],
)
def test_a_wrong_value_is_named_when_the_group_is_built(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_fit_reads_each_group(tmp_path):
    """lr reaches the optimizer, the evaluation runs every epoch with its samples, the checkpoint is written."""
    result = pplgen.fit(
        small_vae(),
        "svi",
        binary_data(32),
        epochs=2,
        batch_size=16,
        optimization={"lr": 0.01, "options": {"betas": (0.8, 0.9)}},
        execution=Execution(accelerator="cpu", progress=False),
        evaluation=Evaluation(binary_data(8, seed=4), samples=3),
        checkpoint=tmp_path / "run.pt",
    )
    group = result.training_step.optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["betas"] == (0.8, 0.9)
    assert [row["epoch"] for row in result.evaluations] == [1, 2]
    assert (tmp_path / "run.pt").is_file() and result.checkpoint == tmp_path / "run.pt"
