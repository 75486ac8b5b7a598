"""Topic models on news articles, both ways: ProdLDA with svi and LDA with discrete topics with rws.
=================================================================================================

Story: "Topic models" (:doc:`/models/topics`). Two models of the same documents:

* ``ProdLDA`` (Srivastava & Sutton 2017): logistic-normal topic proportions,
  a product of experts over the words on top of a learned background, an
  amortized Gaussian guide, trained by ``svi``;
* ``LDA`` (Blei, Ng & Jordan 2003) with a discrete topic for every token,
  whose guide draws each topic from its exact conditional given the
  proportions θ; a Categorical has no ``rsample``, so it trains by reweighted
  wake-sleep (``rws``, K=5; Bornschein & Bengio 2015).

Both score a document as the probability of its word sequence, so their
held-out perplexities exp(−Σ_d log p(w_d) / Σ_d N_d) compare with each other
and with two baselines: a uniform distribution over the vocabulary and the
add-one unigram distribution of the training documents. log p(w_d) is
importance-sampled with the guide (``pplgen.evaluate.log_likelihood``).
Topics are also read by their top words and scored by NPMI coherence on the
held-out documents (Lau, Newman & Baldwin 2014; ``pplgen.topics``).

Data: the Lee background corpus that gensim ships (300 Australian news
articles; ``pplgen.data.lee_corpus``): 240 training and 60 held-out
documents over 1,532 words.

Run: ``.venv/bin/python examples/lda.py`` (``--topics``, ``--prodlda-epochs``,
``--lda-epochs``; ``--smoke`` for a few steps). It prints the baselines, then
per model its perplexity, mean NPMI and the top words of ``--show`` topics,
and returns ``{"<model> perplexity": ..., "<model> npmi": ..., "unigram perplexity": ...}``.
"""

import argparse
import time

import every_engine
import torch

import pplgen
from pplgen import topics
from pplgen.models import LDA, ProdLDA

SMOKE = {"topics": 3, "prodlda_epochs": 1, "lda_epochs": 1, "eval_samples": 5, "show": 1}


def fit_prodlda(train, args):
    prod = ProdLDA(train.num_words, num_topics=args.topics)
    prod.initialize_background(train.counts)
    options = {
        "batch_size": 32,
        "seed": args.seed,
        "optimization": {"lr": args.lr},
        "execution": {"accelerator": "cpu"},
    }
    pplgen.fit(prod, "svi", train.counts, epochs=args.prodlda_epochs, **options)
    return prod


def fit_lda(train, args):
    lda = LDA(train.num_words, num_topics=args.topics)
    engine = pplgen.inference.get("rws", num_particles=5)
    options = {
        "batch_size": 32,
        "seed": args.seed,
        "optimization": {"lr": args.lr},
        "execution": {"accelerator": "cpu"},
    }
    pplgen.fit(lda, engine, train.tokens, epochs=args.lda_epochs, **options)
    return lda


def report(label, model, documents, train, test, args):
    """Print and return the held-out perplexity and mean NPMI of a fitted model, and show its top words."""
    log_likelihood = pplgen.evaluate.log_likelihood(model, documents, num_samples=args.eval_samples)
    perplexity = topics.perplexity(log_likelihood, test.counts)
    npmi = topics.npmi_coherence(model.topic_words(), test.counts).mean().item()
    print(f"  held-out perplexity {perplexity:7.1f}   mean NPMI {npmi:+.3f}")
    for words in topics.top_words(model.topic_words(), train.vocabulary, 8)[: args.show]:
        print("    " + " ".join(words))
    return {f"{label} perplexity": perplexity, f"{label} npmi": npmi}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--prodlda-epochs", type=int, default=200)
    parser.add_argument("--lda-epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--eval-samples", type=int, default=200, help="K of each document's log-likelihood")
    parser.add_argument("--show", type=int, default=5, help="topics whose top words are printed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Fit both models; returns their held-out perplexities and mean NPMI, and the unigram baseline's perplexity."""
    args = parse_args(argv)
    train, test = pplgen.data.lee_corpus("train"), pplgen.data.lee_corpus("test")
    unigram = topics.unigram_perplexity(train.counts, test.counts)
    print(
        f"Lee corpus: {len(train.counts)} training and {len(test.counts)} held-out documents, "
        f"{train.num_words} words, {args.topics} topics"
    )
    print(f"baselines: uniform perplexity {train.num_words}, unigram {unigram:.1f}")
    figures = {"unigram perplexity": unigram}
    for label, engine, fit, documents, epochs in [
        ("ProdLDA", "svi", fit_prodlda, test.counts, args.prodlda_epochs),
        ("LDA", "rws, K=5", fit_lda, test.tokens, args.lda_epochs),
    ]:
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        model = fit(train, args)
        print(f"{label} ({engine}), {epochs} epochs in {time.perf_counter() - start:.1f} s:")
        figures.update(report(label, model, documents, train, test, args))
    return figures


if __name__ == "__main__":
    main()
