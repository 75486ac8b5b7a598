"""The same programs and engines on CUDA (run with ``pytest -m gpu``; skipped without CUDA)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pplgen
from pplgen import evaluate
from pplgen.inference import ENGINES, get
from pplgen.models import VAE
from tests.support.cases import family_for

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
WORKER = Path(__file__).parents[1] / "distributed" / "parallel_worker.py"


def digits(count=500):
    return pplgen.data.load("mnist", split="train", binarize="threshold")[:count]


def family(name):
    torch.manual_seed(0)
    return family_for(name, vae={}, sbn={"layers": (200,)})


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_trains_its_model_family_on_cuda_and_resumes_exactly(name, tmp_path):
    x = digits()
    pair = family(name)
    result = pplgen.fit(
        pair, get(name), x, epochs=2, execution=pplgen.Execution(accelerator="cuda"), checkpoint=tmp_path / "c.pt"
    )
    assert all(p.is_cuda for p in pair.parameters())
    assert result.metric("loss")[-1] < result.metric("loss")[0]
    estimate = evaluate.log_likelihood(pair, x[:100].cuda(), num_samples=500)
    assert estimate.is_cuda and torch.isfinite(estimate).all()
    resumed = pplgen.fit(
        family(name),
        get(name),
        x,
        epochs=2,
        execution=pplgen.Execution(accelerator="cuda"),
        checkpoint=pplgen.Checkpointing(tmp_path / "c.pt", resume=True),
    )
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in result.history]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_trains_in_mixed_precision_on_cuda(name, precision):
    pair = family(name)
    result = pplgen.fit(
        pair, get(name), digits(), epochs=2, execution=pplgen.Execution(accelerator="cuda", precision=precision)
    )
    losses = result.metric("loss")
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert (result.training_step.scaler is not None) == (precision == "16-mixed")


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_compiled_steps_give_the_eager_losses_on_cuda(name):
    losses = []
    for compiled in (False, True):
        result = pplgen.fit(
            family(name),
            get(name),
            digits(200),
            steps=3,
            seed=0,
            execution=pplgen.Execution(accelerator="cuda", compile=compiled),
        )
        losses.append(torch.tensor([row["loss"] for row in result.history]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-2)


def test_a_step_copies_to_the_host_at_most_twice():
    """The step's only device-to-host copies: the reduced metrics with the surrogate (one) and the finiteness of
    the updated parameters (one); nothing else in engine, model or guide synchronizes."""
    pair, x = family("svi"), digits(200).cuda()
    trainer = pplgen.TrainingStep(pair.model, pair.guide, get("svi"))
    pair.cuda()
    trainer.step(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(3):
            trainer.step(x)
    copies = [event for event in profile.events() if "Memcpy DtoH" in event.name]
    assert len(copies) <= 2 * 3


def test_implicit_guide_trains_by_avb_and_is_scored_by_ais_on_cuda():
    x = digits()
    torch.manual_seed(0)
    vae = VAE(latent_dim=8, guide="implicit")
    engine = get("avb", num_particles=4, adaptive_contrast=True)
    result = pplgen.fit(vae, engine, x, epochs=2, execution=pplgen.Execution(accelerator="cuda"), evaluation=x[:50])
    assert all(p.is_cuda for p in [*vae.parameters(), *engine.parameters()])
    assert result.evaluations[-1]["estimator"].startswith("ais")
    estimate = evaluate.ais(vae, x[:20].cuda(), num_steps=20, num_chains=4)
    assert estimate.is_cuda and torch.isfinite(estimate).all()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_take_the_one_gpu_step_on_the_union(tmp_path):
    """The CPU data-parallel scenarios (``tests/distributed``) with 2 GPUs (nccl): MAP updates equal 1 GPU's."""
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = {}
    for devices in (1, 2):
        out = tmp_path / str(devices)
        command = [
            sys.executable,
            str(WORKER),
            "--devices",
            str(devices),
            "--accelerator",
            "cuda",
            "--scenarios",
            "map",
            "--out",
            str(out),
        ]
        finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert finished.returncode == 0, finished.stderr[-3000:]
        runs[devices] = [torch.load(path, weights_only=False) for path in sorted(out.glob("rank*.pt"))]
    for rank in runs[2]:
        for program in ("plain", "subsampled"):
            torch.testing.assert_close(rank["map"][program], runs[1][0]["map"][program], rtol=0, atol=1e-5)
