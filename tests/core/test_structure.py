"""``pplgen.graph``: the structure of known models, found by running them."""

import networkx as nx
import torch

import pplgen
from pplgen.models import VAE, EightSchools, SigmoidBeliefNet
from pplgen.structure import draw


def edges_and_nodes(structure):
    return sorted(structure.edges), dict(structure.nodes(data=True))


def test_eight_schools_centered_and_non_centered():
    data = pplgen.data.eight_schools()
    edges, nodes = edges_and_nodes(pplgen.graph(EightSchools("centered").model, data.sigma, data.y))
    assert edges == [("mu", "theta"), ("tau", "theta"), ("theta", "obs")]
    assert nodes["tau"] == {"distribution": "HalfCauchy", "observed": False, "plates": ()}
    assert nodes["obs"] == {"distribution": "Normal", "observed": True, "plates": ("school",)}
    edges, _ = edges_and_nodes(pplgen.graph(EightSchools("non_centered").model, data.sigma, data.y))
    assert edges == [("mu", "obs"), ("tau", "obs"), ("theta_t", "obs")]


def test_sigmoid_belief_net_is_a_chain_top_down():
    sbn = SigmoidBeliefNet(layers=(4, 3, 2), observed=6)
    edges, nodes = edges_and_nodes(pplgen.graph(sbn.model, torch.rand(2, 6).bernoulli()))
    assert edges == [("h1", "x"), ("h2", "h1"), ("h3", "h2")]
    assert all(node["plates"] == ("data",) and node["distribution"] == "Bernoulli" for node in nodes.values())


def test_vae_and_drawing(tmp_path):
    structure = pplgen.graph(VAE(data_dim=6, latent_dim=2, hidden=(4,)).model, torch.rand(3, 6).bernoulli())
    assert nx.is_directed_acyclic_graph(structure) and sorted(structure.edges) == [("z", "x")]
    draw(structure, tmp_path / "graph.png", title="vae")
    assert (tmp_path / "graph.png").stat().st_size > 1000
