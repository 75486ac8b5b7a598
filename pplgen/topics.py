"""Measures of topic models: held-out perplexity, NPMI coherence, top words.

::

    log_likelihood = pplgen.evaluate.log_likelihood(lda, test.tokens, num_samples=200)
    perplexity(log_likelihood, test.counts)              # exp(−Σ_d log p(w_d) / Σ_d N_d)
    top_words(lda.topic_words(), test.vocabulary, 10)
    npmi_coherence(lda.topic_words(), test.counts)       # mean NPMI of each topic's top-10 pairs
"""

import itertools
import math

import torch


def perplexity(log_likelihood, counts):
    """exp(−Σ_d log p(w_d) / Σ_d N_d) from per-document log-likelihoods and the documents' word counts."""
    return math.exp(-float(log_likelihood.sum()) / float(counts.sum()))


def unigram_perplexity(train_counts, test_counts):
    """The perplexity of one add-one-smoothed word distribution fitted to the training documents: the
    baseline a topic model must beat (a uniform distribution scores V)."""
    frequency = train_counts.sum(0) + 1
    log_p = (frequency / frequency.sum()).log()
    return math.exp(-float((test_counts * log_p).sum()) / float(test_counts.sum()))


def top_words(topic_words, vocabulary, count=10):
    """The ``count`` highest-weighted words of each topic, as lists of strings."""
    return [[vocabulary[i] for i in row.topk(count).indices.tolist()] for row in topic_words]


def npmi_coherence(topic_words, counts, count=10):
    """Mean normalized pointwise mutual information of each topic's top-``count`` word pairs, ``(K,)``.

    Probabilities are document frequencies in ``counts`` (Lau et al. 2014,
    Bouma 2009): NPMI(a, b) = log[p(a, b) / (p(a) p(b))] / −log p(a, b), and
    −1 for a pair that never co-occurs. Scored on held-out documents it says
    whether the topics' words go together in text the model never saw.
    """
    if not isinstance(count, int) or count < 2:
        raise ValueError(f"count must be an int >= 2 (NPMI scores pairs of top words), got {count!r}")
    present = (counts > 0).float()
    p_word = present.mean(0)
    p_pair = present.T @ present / present.shape[0]
    scores = []
    for row in topic_words:
        pairs = itertools.combinations(row.topk(count).indices.tolist(), 2)
        values = [_npmi(p_pair[a, b], p_word[a], p_word[b]) for a, b in pairs]
        scores.append(sum(values) / len(values))
    return torch.tensor(scores)


def _npmi(joint, a, b):
    if joint <= 0:
        return -1.0
    if joint >= 1:
        return 1.0
    return float((joint / (a * b)).log() / -joint.log())
