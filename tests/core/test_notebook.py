"""pplgen leaves matplotlib's backend as the user set it (a notebook keeps its inline figures)."""

import os
import subprocess
import sys

PROGRAM = """
import matplotlib
import torch
import pplgen, pplgen.cli, pplgen.reports, pplgen.plots, pplgen.structure, pplgen.diagnostics
from pplgen.models import VAE

pplgen.plots.image_grid(torch.rand(4, 9), "{out}/grid.png", title="grid")
pplgen.plots.plot_losses([{{"step": 1, "epoch": 1, "loss": 3.0, "batch_size": 1}}], [], "{out}/loss.png")
vae = VAE(data_dim=4, latent_dim=2, hidden=(3,))
figure = pplgen.structure.draw(pplgen.graph(vae.model, torch.rand(2, 4).bernoulli()), "{out}/graph.png")
print(matplotlib.get_backend(), type(figure).__name__)
"""


def test_importing_and_plotting_leave_the_backend_alone(tmp_path):
    env = {**os.environ, "MPLBACKEND": "pdf"}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(out=tmp_path)], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["pdf", "Figure"]
    assert {p.name for p in tmp_path.iterdir()} == {"grid.png", "loss.png", "graph.png"}
