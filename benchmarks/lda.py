"""Topic models on gensim's Lee corpus at equal wall-clock time: pplgen's two routes and Pyro's ProdLDA example.

::

    python benchmarks/lda.py --budget 60

Contestants, each trained for ``--budget`` seconds (batch 32, Adam lr 0.01,
20 topics, 240 training documents, 1,532 words):

* ``ProdLDA`` with ``svi``: pplgen's model (background + product of experts,
  amortized Gaussian guide);
* ``LDA`` with ``rws`` (K = 5): discrete per-token topics;
* Pyro's ProdLDA tutorial architecture (encoder 100-100 softplus with
  dropout 0.2 and batch-normalized outputs, decoder with batch norm, N(0, I)
  prior, multinomial likelihood) trained by ``pyro.infer.SVI`` with
  ``Trace_ELBO``, written out here as in the tutorial.

Each is scored on the 60 held-out documents: perplexity of the word sequence
(importance sampling, K = 100 draws of the guide; the Pyro model's multinomial
coefficient is removed so all three score the same quantity) and mean NPMI
coherence of the top-10 words per topic.
"""

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softmax, softplus

import pplgen
from pplgen import topics
from pplgen.models import LDA, ProdLDA

NUM_TOPICS = 20


class PyroExampleEncoder(nn.Module):
    def __init__(self, vocab_size, num_topics, hidden, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1, self.fc2 = nn.Linear(vocab_size, hidden), nn.Linear(hidden, hidden)
        self.fcmu, self.fclv = nn.Linear(hidden, num_topics), nn.Linear(hidden, num_topics)
        self.bnmu = nn.BatchNorm1d(num_topics, affine=False)
        self.bnlv = nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, inputs):
        h = self.drop(softplus(self.fc2(softplus(self.fc1(inputs)))))
        return self.bnmu(self.fcmu(h)), (0.5 * self.bnlv(self.fclv(h))).exp()


class PyroExampleDecoder(nn.Module):
    def __init__(self, vocab_size, num_topics, dropout):
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs):
        return softmax(self.bn(self.beta(self.drop(inputs))), dim=1)


class PyroExampleProdLDA(nn.Module):
    """Pyro's ProdLDA tutorial model and guide."""

    def __init__(self, vocab_size, num_topics=NUM_TOPICS, hidden=100, dropout=0.2):
        super().__init__()
        self.num_topics = num_topics
        self.encoder = PyroExampleEncoder(vocab_size, num_topics, hidden, dropout)
        self.decoder = PyroExampleDecoder(vocab_size, num_topics, dropout)

    def model(self, docs):
        pyro.module("decoder", self.decoder)
        with pyro.plate("documents", docs.shape[0]):
            loc, scale = (
                docs.new_zeros((docs.shape[0], self.num_topics)),
                docs.new_ones((docs.shape[0], self.num_topics)),
            )
            theta = softmax(pyro.sample("logtheta", dist.Normal(loc, scale).to_event(1)), -1)
            probs = self.decoder(theta)
            total = int(docs.sum(-1).max())
            pyro.sample("obs", dist.Multinomial(total, probs, validate_args=False), obs=docs)

    def guide(self, docs):
        pyro.module("encoder", self.encoder)
        with pyro.plate("documents", docs.shape[0]):
            loc, scale = self.encoder(docs)
            pyro.sample("logtheta", dist.Normal(loc, scale).to_event(1))

    def topic_words(self):
        return self.decoder.beta.weight.detach().T


def batches(data, batch_size, generator):
    return data[torch.randperm(len(data), generator=generator)].split(batch_size)


def train_pplgen(model, engine, data, budget):
    trainer = pplgen.TrainingStep(model.model, model.guide, engine, lr=1e-2)
    return _train(trainer.step, data, budget)


def train_pyro(model, data, budget):
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    model.train()
    return _train(svi.step, data, budget)


def _train(step, data, budget):
    """Epochs of batch 32 until ``budget`` seconds have passed; the epochs (fractional) done."""
    generator = torch.Generator().manual_seed(0)
    epochs, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < budget:
        chunks = batches(data, 32, generator)
        for batch in chunks:
            step(batch)
            epochs += 1 / len(chunks)
            if time.perf_counter() - start >= budget:
                break
    return epochs


def pyro_sequence_log_likelihood(model, counts):
    """Importance-sampled log p(word sequence) of the tutorial model, one particle at a time (batch norm)."""
    model.eval()
    multinomial = pplgen.evaluate.log_likelihood(
        model.model, counts, guide=model.guide, num_samples=100, particle_chunk=1
    )
    coefficient = torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)
    return multinomial - coefficient


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=60, help="training seconds per contestant")
    args = parser.parse_args()
    train, test = pplgen.data.lee_corpus("train"), pplgen.data.lee_corpus("test")
    print(
        f"Lee corpus: {len(train.counts)} train, {len(test.counts)} test documents, {train.num_words} words; "
        f"{args.budget:.0f} s per contestant; uniform perplexity {train.num_words}, "
        f"unigram {topics.unigram_perplexity(train.counts, test.counts):.1f}"
    )
    print("\n| contestant | s/epoch | epochs | held-out perplexity | NPMI (top 10) |")
    print("|---|---|---|---|---|")
    rows = []
    pyro.set_rng_seed(0)
    prod = ProdLDA(train.num_words, NUM_TOPICS)
    prod.initialize_background(train.counts)
    epochs = train_pplgen(prod, pplgen.inference.get("svi"), train.counts, args.budget)
    rows.append(
        ("pplgen ProdLDA, svi", epochs, pplgen.evaluate.log_likelihood(prod, test.counts, num_samples=100), prod)
    )
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    lda = LDA(train.num_words, NUM_TOPICS)
    epochs = train_pplgen(lda, pplgen.inference.get("rws", num_particles=5), train.tokens, args.budget)
    rows.append(
        (
            "pplgen LDA, rws K=5",
            epochs,
            pplgen.evaluate.log_likelihood(lda, test.tokens, num_samples=100, batch_size=20),
            lda,
        )
    )
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    example = PyroExampleProdLDA(train.num_words)
    epochs = train_pyro(example, train.counts, args.budget)
    rows.append(
        ("Pyro ProdLDA tutorial, SVI + Trace_ELBO", epochs, pyro_sequence_log_likelihood(example, test.counts), example)
    )
    for label, epochs, log_likelihood, model in rows:
        score = topics.perplexity(log_likelihood, test.counts)
        coherence = topics.npmi_coherence(model.topic_words(), test.counts).mean()
        print(f"| {label} | {args.budget / epochs:.3f} | {epochs:.0f} | {score:.1f} | {coherence:+.3f} |")


if __name__ == "__main__":
    main()
