"""Topic models on gensim's Lee corpus: both routes learn, held-out perplexity beats the uniform-topic
baseline, and the measures of pplgen.topics are right on hand-made counts."""

import pyro
import pytest
import torch

import pplgen
from pplgen import topics
from pplgen.inference import get
from pplgen.models import LDA, ProdLDA
from pplgen.models.lda import BagOfWords, WordOfTopic

pytest.importorskip("gensim", reason="the Lee corpus ships in gensim's test data")


@pytest.fixture(scope="module")
def corpus():
    return pplgen.data.lee_corpus("train"), pplgen.data.lee_corpus("test")


def test_prodlda_by_svi_beats_the_uniform_and_unigram_baselines(corpus):
    """Seed 0, 150 epochs: held-out perplexity below 0.7 V (uniform topics score V = 1,532) and below the
    unigram's 1,109 (measured 881 at 200 epochs); the top words of a topic are distinct words."""
    train, test = corpus
    pyro.set_rng_seed(0)
    model = ProdLDA(train.num_words, num_topics=20)
    model.initialize_background(train.counts)
    pplgen.fit(model, "svi", train.counts, epochs=150, batch_size=32, optimization=pplgen.Optimization(lr=1e-2))
    log_likelihood = pplgen.evaluate.log_likelihood(model, test.counts, num_samples=100)
    score = topics.perplexity(log_likelihood, test.counts)
    assert score < 0.7 * train.num_words and score < topics.unigram_perplexity(train.counts, test.counts)
    words = topics.top_words(model.topic_words(), train.vocabulary, 10)
    assert len(words) == 20 and all(len(set(w)) == 10 for w in words)


def test_discrete_lda_by_rws_beats_the_uniform_baseline(corpus):
    """Seed 0, 30 epochs of rws (K = 5) on per-token topic assignments: held-out perplexity below 0.7 V
    (measured 874 at 50 epochs)."""
    train, test = corpus
    pyro.set_rng_seed(0)
    model = LDA(train.num_words, num_topics=20)
    pplgen.fit(
        model,
        get("rws", num_particles=5),
        train.tokens,
        epochs=30,
        batch_size=32,
        optimization=pplgen.Optimization(lr=1e-2),
    )
    log_likelihood = pplgen.evaluate.log_likelihood(model, test.tokens, num_samples=50, batch_size=20)
    assert topics.perplexity(log_likelihood, test.counts) < 0.7 * train.num_words


def test_both_observation_models_score_the_sequence_of_words():
    """Counts scored by BagOfWords and tokens scored one by one by WordOfTopic give the same log p(w_1..N)."""
    log_topics = torch.log_softmax(torch.randn(3, 4), -1)
    tokens = torch.tensor([0, 0, 2, 3])
    counts = torch.bincount(tokens, minlength=4).float()
    topic = torch.tensor(1)
    sequence = WordOfTopic(log_topics, topic.expand(4)).log_prob(tokens).sum()
    assert torch.allclose(BagOfWords(log_topics[1]).log_prob(counts), sequence)
    assert torch.allclose(sequence, log_topics[1, tokens].sum())


def test_npmi_on_hand_made_documents():
    counts = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    always_together = torch.tensor([[1.0, 1.0, 0.0]])
    never_together = torch.tensor([[1.0, 0.0, 1.0]])
    assert topics.npmi_coherence(always_together, counts, count=2).item() == pytest.approx(1.0)
    assert topics.npmi_coherence(never_together, counts, count=2).item() == pytest.approx(-1.0)
    assert topics.unigram_perplexity(counts, counts) == pytest.approx(3.0)  # every word 2 + 1 of 9


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"expects word counts of shape \(documents, 5\)"):
        ProdLDA(5).model(torch.ones(2, 4))
    with pytest.raises(ValueError, match="expects int64 token ids"):
        LDA(5).model(torch.ones(2, 4))
    with pytest.raises(ValueError, match="token id 7 is outside the vocabulary of 5 words"):
        LDA(5).model(torch.tensor([[7, 1]]))


def test_word_of_topic_draws_from_each_topic():
    log_topics = torch.log(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).clamp(min=1e-30))
    topic = torch.tensor([[0, 1, 1], [1, 0, 0]])
    words = WordOfTopic(log_topics, topic).sample((4,))
    assert words.shape == (4, 2, 3)
    assert torch.equal(words, (topic * 2).expand(4, 2, 3))
