"""Run folders of the Bayesian and topic models: fit, then diagnose (what ``pplgen fit eight-schools``,
``multilevel`` and ``lda`` write).

::

    report = pplgen.reports.posterior_report(EightSchools(), "svi", (sigma, y), "runs/eight-schools",
                                              steps=3000, compare_nuts=True, coords={"school": names})
    report["khat"], report["comparison"]

The folder holds ``posterior.nc`` (the guide's ``arviz.InferenceData``),
``graph.png`` (the model's structure), ``loss.png``, ``metrics.json`` (the
configuration, the final loss, PSIS k̂ and its reading, wall times) and, with
``compare_nuts``, ``nuts.nc`` (NumPyro's NUTS on the same program),
``comparison.csv`` and ``comparison.png`` (VI against NUTS, per parameter).
The data files (``.nc``, ``.csv``, ``.json``) are written whole or not at all.
The run uses the CPU: these models are small, and their data stay where they are.
"""

import json
import time
from pathlib import Path

from pplgen import diagnostics, evaluate, plots, structure, topics
from pplgen.files import write_atomically
from pplgen.training import fit


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
    progress=True,
):
    """Fit ``model`` (with ``.model`` and ``.guide``) on the programs' ``arguments`` and write the run folder ``out``.

    Returns the content of ``metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = fit(model, engine, arguments, steps=steps, lr=lr, seed=seed, device="cpu", progress=progress)
    fit_seconds = time.perf_counter() - start
    posterior = diagnostics.to_inference_data(result, arguments, num_samples=num_samples, coords=coords)
    khat = diagnostics.psis_khat(result, arguments, num_samples=max(num_samples, 10000))
    write_atomically(out / "posterior.nc", posterior.to_netcdf)
    structure.draw(structure.graph(model.model, *arguments), out / "graph.png", title="model structure")
    plots.plot_losses(result.history, [], out / "loss.png", title=f"{type(model).__name__} trained by {result.engine.name}")
    record = {
        "config": {"model": type(model).__name__, "engine": result.engine.name, "engine_options": result.engine.options(),
                   "steps": steps, "lr": lr, "seed": seed, "num_samples": num_samples},
        "final_loss": result.history[-1]["loss"],
        "khat": khat.khat,
        "khat_reading": khat.reading,
        "fit_wall_time_s": fit_seconds,
    }
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
    write_atomically(out / "metrics.json", lambda path: Path(path).write_text(json.dumps(record, indent=2) + "\n"))
    return record


def topic_report(model, engine, train, test, out, *, epochs=200, batch_size=32, lr=1e-2, seed=0, num_samples=100, progress=True):
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
        model, engine, getattr(train, field), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device="cpu", progress=progress
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
        "config": {"model": type(model).__name__, "engine": result.engine.name, "engine_options": result.engine.options(),
                   "num_topics": model.num_topics, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
        "steps": result.trainer.num_steps,
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
    lines = [f"{i:>2}  npmi {row['npmi']:+.3f}  {' '.join(row['top_words'])}" for i, row in enumerate(record["topics"])]
    write_atomically(out / "topics.txt", lambda path: Path(path).write_text("\n".join(lines) + "\n"))
    structure.draw(structure.graph(model.model, getattr(test, field)[:2]), out / "graph.png", title="model structure")
    plots.plot_losses(result.history, [], out / "loss.png", title=f"{type(model).__name__} trained by {result.engine.name}")
    write_atomically(out / "metrics.json", lambda path: Path(path).write_text(json.dumps(record, indent=2) + "\n"))
    return record
