"""Run folders: fit, then evaluate or diagnose, and write what ``pplgen fit`` writes for every model family
(:func:`image_report` for ``vae``, ``sbn`` and ``helmholtz``; :func:`posterior_report` for ``eight-schools``
and ``multilevel``; :func:`topic_report` for ``lda``), each file through one atomic writer.

::

    report = pplgen.reports.posterior_report(EightSchools(), "svi", (sigma, y), "runs/eight-schools",
                                              steps=3000, compare_nuts=True, coords={"school": names})
    report["khat"], report["comparison"]

A posterior report's folder holds ``posterior.nc`` (the guide's ``arviz.InferenceData``),
``graph.png`` (the model's structure), ``loss.png``, ``metrics.json`` (the
configuration, the final loss, PSIS k̂ and its reading, wall times) and, with
``compare_nuts``, ``nuts.nc`` (NumPyro's NUTS on the same program),
``comparison.csv`` and ``comparison.png`` (VI against NUTS, per parameter).
Every file of a run folder is written whole or not at all (:func:`pplgen.files.write_atomically`).
The run uses the CPU: these models are small, and their data stay where they are.
"""

import json
import platform
import time
from pathlib import Path

import pyro
import torch

import pplgen
from pplgen import diagnostics, evaluate, plots, structure, topics
from pplgen.distributed import rank, world_size
from pplgen.evaluate import held_out_scores
from pplgen.files import write_atomically
from pplgen.options import Checkpointing, Evaluation, Execution, Optimization
from pplgen.training import fit


def image_report(
    model,
    engine,
    x_train,
    x_test,
    out,
    *,
    config,
    label,
    test_samples=5000,
    test_ais_options=None,
    evaluation=None,
    checkpoint=None,
    **fit_options,
):
    """Fit an image model (:mod:`pplgen.models`: ``VAE``, ``SigmoidBeliefNet``, ...) on ``x_train`` and write the
    run folder ``out``: ``checkpoint.pt`` (every epoch), then ``metrics.json`` (``config`` with what the run
    resolved, the losses per epoch, the evaluations and the test scores by ``test_samples`` importance samples,
    or by AIS with ``test_ais_options`` for an implicit guide or none), ``loss.png``, ``samples.png`` and
    ``reconstructions.png``, titled after ``label``. ``fit_options`` go to :func:`pplgen.fit`, which
    evaluates on ``x_test`` during training with the :class:`~pplgen.options.Evaluation` options
    ``evaluation`` and checkpoints with the :class:`~pplgen.options.Checkpointing` options ``checkpoint``
    (dicts without the data and the path). Returns the content of ``metrics.json``.

    In a multi-process fit (``devices=N``) every rank trains and scores its share of the test images; rank 0
    alone writes the folder.
    """
    out = Path(out)
    start = time.perf_counter()
    evaluation = Evaluation(x_test, **(evaluation or {}))
    checkpoint = Checkpointing(out / "checkpoint.pt", **(checkpoint or {}))
    result = fit(model, engine, x_train, **fit_options, evaluation=evaluation, checkpoint=checkpoint)
    wall_time = time.perf_counter() - start
    device = next(model.parameters()).device
    x_test = x_test.to(device)
    where = str(device) if world_size() == 1 else f"{world_size()} processes on {device.type}"
    config = {**config, "engine_options": result.engine.options(), "device": where, "out": str(out)}
    record = _record(config, result, _test_scores(model, result, x_test, test_samples, test_ais_options), wall_time)
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", record)
        _write_figures(out, model, result, x_test, label)
    return record


def _test_scores(model, result, x_test, num_samples, ais_options):
    """Mean log-likelihood (and ELBO, where the guide has a density) per test image, in nats, and how it was
    estimated, from the fit's plan."""
    scores = held_out_scores(model.model, result.guide, x_test, num_samples, ais_options, plan=result.engine.plan)
    return {**scores, "num_samples": num_samples, "num_images": len(x_test)}


def _record(config, result, test, wall_time):
    """The content of ``metrics.json``."""
    return {
        "config": config,
        "epochs": _epoch_losses(result.history),
        "evaluations": result.evaluations,
        "test": test,
        "steps": result.training_step.num_steps,
        "wall_time_s": wall_time,
        "versions": {
            "pplgen": pplgen.__version__,
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "python": platform.python_version(),
        },
    }


def _epoch_losses(history):
    """Mean training loss per datum of each epoch (1-based, the last one possibly partial)."""
    epochs = {}
    for row in history:
        entry = epochs.setdefault(row["epoch"], {"epoch": row["epoch"] + 1, "steps": 0, "loss": 0.0, "data": 0})
        entry["steps"] += 1
        entry["last_step"] = row["step"]
        entry["loss"] += row["loss"]
        entry["data"] += row["batch_size"]
    return [
        {"epoch": e["epoch"], "steps": e["steps"], "last_step": e["last_step"], "loss_per_datum": e["loss"] / e["data"]}
        for e in epochs.values()
    ]


def _write_figures(out, model, result, x_test, label):
    """``loss.png``, ``samples.png`` and (for engines that train the guide) ``reconstructions.png`` in ``out``,
    titled after ``label``."""
    plots.plot_losses(result.history, result.evaluations, out / "loss.png", title=label)
    plots.image_grid(model.sample(64), out / "samples.png", rows=8, title=f"{label}\nsamples (mean images)")
    if not result.engine.needs_guide:  # the guide was not trained: no reconstructions to show
        return
    columns = min(8, len(x_test))
    originals = x_test[: (min(32, len(x_test)) // columns) * columns]
    pairs = _rows_above(originals, model.reconstruct(originals), columns)
    title = f"{label}\ntest images above their reconstructions"
    plots.image_grid(pairs, out / "reconstructions.png", rows=len(pairs) // columns, title=title)


def _rows_above(upper, lower, columns):
    """Interleave rows of ``columns`` images: a row of ``upper``, the same row of ``lower``, ..."""
    rows = []
    for start in range(0, len(upper), columns):
        rows += [upper[start : start + columns], lower[start : start + columns]]
    return torch.cat(rows)


def write_json(path, value):
    """Write ``value`` as JSON to ``path`` atomically (:func:`pplgen.files.write_atomically`)."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(value, indent=2) + "\n"))


def image_summary(record):
    """A few lines for people: what was trained, for how long, and the held-out scores."""
    config, test = record["config"], record["test"]
    options = ", ".join(f"{name}={value}" for name, value in config["engine_options"].items())
    return "\n".join(
        [
            f"{config['model']} trained by {config['engine']}{f' ({options})' if options else ''} "
            f"on {config['data']}/{config['split_train']} ({config['train_images']} images)",
            f"  {record['steps']} steps in {record['wall_time_s']:.1f} s on {config['device']}",
            f"  test log-likelihood {test['log_likelihood']:.2f} nats "
            f"({test['num_images']} images of {config['data']}/{config['split_test']}, by {test['estimator']})",
            f"  test ELBO           {test['elbo']:.2f} nats"
            if test["elbo"] is not None
            else f"  test ELBO           none ({'no guide' if 'no guide' in test['estimator'] else 'implicit guide'})",
            f"  run folder: {config['out']}",
        ]
    )


def posterior_report(
    model,
    engine,
    arguments,
    out,
    *,
    steps=3000,
    lr=0.02,
    seed=0,
    num_samples=4000,
    compare_nuts=False,
    nuts_options=None,
    coords=None,
    progress=None,
    loggers=None,
):
    """Fit ``model`` (with ``.model`` and ``.guide``) on the programs' ``arguments`` and write the run folder ``out``.

    Returns the content of ``metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = fit(
        model,
        engine,
        arguments,
        steps=steps,
        seed=seed,
        optimization=Optimization(lr=lr),
        execution=Execution(accelerator="cpu", progress=progress),
        loggers=loggers,
    )
    fit_seconds = time.perf_counter() - start
    posterior = diagnostics.to_inference_data(result, arguments, num_samples=num_samples, coords=coords)
    khat = diagnostics.psis_khat(result, arguments, num_samples=max(num_samples, 10000))
    write_atomically(out / "posterior.nc", posterior.to_netcdf)
    record = {
        "config": {
            "model": type(model).__name__,
            "engine": result.engine.name,
            "engine_options": result.engine.options(),
            "steps": steps,
            "lr": lr,
            "seed": seed,
            "num_samples": num_samples,
        },
        "final_loss": result.history[-1]["loss"],
        "khat": khat.khat,
        "khat_reading": khat.reading,
        "fit_wall_time_s": fit_seconds,
    }
    write_json(out / "metrics.json", record)
    structure.draw(structure.graph(model.model, *arguments), out / "graph.png", title="model structure")
    plots.plot_losses(
        result.history, [], out / "loss.png", title=f"{type(model).__name__} trained by {result.engine.name}"
    )
    if compare_nuts:
        start = time.perf_counter()
        reference = diagnostics.nuts_reference(model.model, *arguments, coords=coords, **(nuts_options or {}))
        record["nuts_wall_time_s"] = time.perf_counter() - start
        record["nuts_backend"] = reference.attrs["nuts_backend"]
        comparison = diagnostics.compare(posterior, reference)
        write_atomically(out / "nuts.nc", reference.to_netcdf)
        write_atomically(out / "comparison.csv", comparison.table.to_csv)
        write_atomically(out / "comparison.png", comparison.figure.savefig)
        record["comparison"] = json.loads(comparison.table.to_json(orient="index"))
        write_json(out / "metrics.json", record)
    return record


def topic_report(
    model,
    engine,
    train,
    test,
    out,
    *,
    epochs=200,
    batch_size=32,
    lr=1e-2,
    seed=0,
    num_samples=100,
    progress=None,
    loggers=None,
):
    """Fit a topic model (:mod:`pplgen.models.lda`) on ``train`` (a :class:`~pplgen.data.Corpus`) and write
    the run folder ``out``: ``metrics.json`` (held-out perplexity beside the uniform and unigram
    baselines, NPMI coherence per topic on ``test``, top words, PSIS k̂ of the guide on the held-out
    documents, wall times), ``posterior.nc`` (``num_samples`` guide draws for them), ``topics.txt``,
    ``loss.png`` and ``graph.png``. ProdLDA reads word counts, LDA token ids. Returns the content of ``metrics.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    field = "counts" if hasattr(model, "initialize_background") else "tokens"
    if field == "counts":
        model.initialize_background(train.counts)
    start = time.perf_counter()
    result = fit(
        model,
        engine,
        getattr(train, field),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        optimization=Optimization(lr=lr),
        execution=Execution(accelerator="cpu", progress=progress),
        loggers=loggers,
    )
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    log_likelihood = evaluate.log_likelihood(model, getattr(test, field), num_samples=num_samples, batch_size=20)
    eval_seconds = time.perf_counter() - start
    held_out = getattr(test, field)
    posterior = diagnostics.to_inference_data(model, held_out, num_samples=num_samples)
    write_atomically(out / "posterior.nc", posterior.to_netcdf)
    khat = diagnostics.psis_khat(model, held_out, num_samples=max(num_samples, 1000))
    words = topics.top_words(model.topic_words(), train.vocabulary, 10)
    coherence = topics.npmi_coherence(model.topic_words(), test.counts)
    record = {
        "config": {
            "model": type(model).__name__,
            "engine": result.engine.name,
            "engine_options": result.engine.options(),
            "num_topics": model.num_topics,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
        },
        "steps": result.training_step.num_steps,
        "fit_wall_time_s": fit_seconds,
        "seconds_per_epoch": fit_seconds / epochs,
        "test_perplexity": topics.perplexity(log_likelihood, test.counts),
        "uniform_perplexity": train.num_words,
        "unigram_perplexity": topics.unigram_perplexity(train.counts, test.counts),
        "evaluation": f"importance sampling (K={num_samples}) on {len(test.counts)} held-out documents",
        "eval_wall_time_s": eval_seconds,
        "npmi_mean": float(coherence.mean()),
        "khat": khat.khat,
        "khat_reading": khat.reading,
        "topics": [{"npmi": float(score), "top_words": top} for score, top in zip(coherence, words)],
    }
    write_json(out / "metrics.json", record)
    lines = [f"{i:>2}  npmi {row['npmi']:+.3f}  {' '.join(row['top_words'])}" for i, row in enumerate(record["topics"])]
    write_atomically(out / "topics.txt", lambda path: Path(path).write_text("\n".join(lines) + "\n"))
    structure.draw(structure.graph(model.model, getattr(test, field)[:2]), out / "graph.png", title="model structure")
    plots.plot_losses(
        result.history, [], out / "loss.png", title=f"{type(model).__name__} trained by {result.engine.name}"
    )
    return record
