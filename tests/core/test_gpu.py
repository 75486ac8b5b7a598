"""The same programs and engines on CUDA (run with ``pytest -m gpu``; skipped without CUDA)."""

import pytest
import torch

import pplgen
from pplgen import evaluate
from pplgen.inference import ENGINES, get
from pplgen.models import VAE

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engines_train_the_vae_on_cuda(name, tmp_path):
    x = pplgen.data.load("mnist", split="train", binarize="threshold")[:500]
    torch.manual_seed(0)
    vae = VAE()
    result = pplgen.fit(vae, get(name), x, epochs=2, device="cuda", checkpoint=tmp_path / "c.pt", progress=False)
    assert all(p.is_cuda for p in vae.parameters())
    assert result.metric("loss")[-1] < result.metric("loss")[0]
    estimate = evaluate.log_likelihood(vae, x[:100].cuda(), num_samples=500)
    assert estimate.is_cuda and torch.isfinite(estimate).all()
    resumed = pplgen.fit(VAE(), get(name), x, epochs=2, device="cuda", checkpoint=tmp_path / "c.pt", resume=True, progress=False)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in result.history]



def test_implicit_guide_trains_by_avb_and_is_scored_by_ais_on_cuda():
    x = pplgen.data.load("mnist", split="train", binarize="threshold")[:500]
    torch.manual_seed(0)
    vae = VAE(latent_dim=8, guide="implicit")
    engine = get("avb", num_particles=4, adaptive_contrast=True)
    result = pplgen.fit(vae, engine, x, epochs=2, device="cuda", valid_data=x[:50], progress=False)
    assert all(p.is_cuda for p in [*vae.parameters(), *engine.parameters()])
    assert result.evaluations[-1]["estimator"].startswith("ais")
    estimate = evaluate.ais(vae, x[:20].cuda(), num_steps=20, num_chains=4)
    assert estimate.is_cuda and torch.isfinite(estimate).all()
