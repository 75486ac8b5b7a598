"""A model's structure as a graph, found by running it: :func:`graph` and :func:`draw`.

Nodes are the model's sample sites, with their distribution, whether they
are observed, and the plates they sit in. An edge u → v says that v's
distribution is computed from u's value. The edges come from data dependence,
not from reading the code: the model runs once with every latent drawn as
a fresh leaf that requires grad, and autograd tells which leaves each
site's log-density reaches (a deterministic transform in between, such as
θ = μ + τ θ̃, is seen through). A latent that cannot carry a gradient
(integer-valued) gets no outgoing edges. ::

    g = pplgen.graph(model, sigma, y)
    g.nodes["theta"]        # {"distribution": "Normal", "observed": False, "plates": ("school",)}
    pplgen.structure.draw(g, "graph.png")
"""

import networkx as nx
from matplotlib.figure import Figure
from pyro import poutine

from pplgen.checks import distribution_name
from pplgen.dependencies import density_reads
from pplgen.files import write_atomically
from pplgen.particles import is_sample_site
from pplgen.sampling import DetachLatents


def graph(model, *args, **kwargs):
    """The model's sample sites and their dependences as a ``networkx.DiGraph``."""
    with poutine.block(), DetachLatents(requires_grad=True):
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    sites = [site for site in trace.nodes.values() if is_sample_site(site)]
    leaves = {s["name"]: s["value"] for s in sites if not s["is_observed"] and s["value"].requires_grad}
    structure = nx.DiGraph()
    for site in sites:
        structure.add_node(
            site["name"],
            distribution=distribution_name(site["fn"]),
            observed=bool(site["is_observed"]),
            plates=tuple(frame.name for frame in site["cond_indep_stack"] if frame.vectorized),
        )
    for site in sites:
        for parent in sorted(density_reads(site, leaves) - {site["name"]}):
            structure.add_edge(parent, site["name"])
    return structure


def draw(structure, path=None, *, title=None):
    """Draw a :func:`graph` top-down by generation with matplotlib: observed sites shaded, plates in
    brackets under each name. Saves to ``path`` if given; returns the figure."""
    layers = list(nx.topological_generations(structure))
    positions = {
        node: ((i - (len(layer) - 1) / 2) * 2.2, -depth)
        for depth, layer in enumerate(layers)
        for i, node in enumerate(sorted(layer))
    }
    width = max((len(layer) for layer in layers), default=1)
    figure = Figure(figsize=(max(4.0, 2.2 * width), max(2.5, 1.4 * len(layers))))
    axis = figure.subplots()
    labels = {
        node: f"{node}\n{data['distribution']}" + (f"\n[{', '.join(data['plates'])}]" if data["plates"] else "")
        for node, data in structure.nodes(data=True)
    }
    colors = ["0.75" if data["observed"] else "white" for _, data in structure.nodes(data=True)]
    nx.draw_networkx(
        structure,
        positions,
        ax=axis,
        labels=labels,
        node_color=colors,
        edgecolors="black",
        node_size=3200,
        font_size=8,
        arrowsize=15,
    )
    axis.set_axis_off()
    axis.margins(0.2)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    if path is not None:
        write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100))
    return figure
