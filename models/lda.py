"""Topic models two ways on the same corpus: amortized ProdLDA and classical LDA with per-token topics.

Both score a document as the probability of its sequence of words
w_1 … w_N, so their held-out log-likelihoods and perplexities compare
directly (:func:`pplgen.topics.perplexity`).

* :class:`ProdLDA` (Srivastava & Sutton 2017): θ_d = softmax(h_d) with
  h_d ~ N(μ, σ²), the Laplace approximation of a Dirichlet(α) prior; words
  drawn from softmax(b + β θ_d), a product of experts over a learned
  background b (which takes the frequent words, so topics need not); the guide is an encoder
  MLP of the word counts giving q(h_d | w_d) = N(m, s²). Reparameterized:
  ``svi`` trains it. ``.model(counts)`` takes ``(D, V)`` word counts.
* :class:`LDA` (Blei, Ng & Jordan 2003): θ_d ~ Dirichlet(α), one discrete
  topic z_dn ~ Categorical(θ_d) per token, w_dn ~ Categorical(β_{z_dn}); the
  topics β are point-estimated parameters. The guide draws θ_d from a
  Dirichlet given by an encoder of the counts and each z_dn from its exact
  conditional q(z_dn = k) ∝ θ_dk β_k,w_dn (β detached, so the guide's update
  never moves the model's topics). Its sites are discrete: a score-function
  engine trains it (``rws``, ``vimco``, ``nvil``). ``.model(tokens)`` takes
  ``(D, N)`` token ids padded with −1.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import constraints
from torch.nn.functional import log_softmax, softplus

from pplgen.nn import mlp


class BagOfWords(dist.TorchDistribution):
    """The probability of a sequence of words summarized by its counts: log p = Σ_w n_w log p_w.

    (No multinomial coefficient: the order-specific probability, as perplexity uses.)
    ``logits`` has shape ``batch + (V,)``; a value is a count vector ``(V,)``.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits, validate_args=None):
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return BagOfWords(self.logits.expand(*batch_shape, self.logits.shape[-1]))

    def log_prob(self, value):
        return (value * log_softmax(self.logits, -1)).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError("BagOfWords scores observed counts; it does not know a document's length to draw one")


class WordOfTopic(dist.TorchDistribution):
    """Categorical(β_z) over words for a topic index z, scored by a gather instead of a ``(…, V)`` tensor.

    ``log_topics`` is ``(K, V)`` log-probabilities; ``topic`` holds topic ids of any batch shape.
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, log_topics, topic, validate_args=None):
        self.log_topics, self.topic = log_topics, topic
        super().__init__(topic.shape, torch.Size(), validate_args=False)

    @constraints.dependent_property
    def support(self):
        return constraints.integer_interval(0, self.log_topics.shape[-1] - 1)

    def expand(self, batch_shape, _instance=None):
        return WordOfTopic(self.log_topics, self.topic.expand(batch_shape))

    def log_prob(self, value):
        return self.log_topics[self.topic, value.clamp(min=0)]

    def sample(self, sample_shape=torch.Size()):
        """One word per topic id, drawn topic by topic (never a ``(…, V)`` tensor)."""
        topic = self.topic.expand(torch.Size(sample_shape) + self.topic.shape)
        words = torch.empty_like(topic)
        probs = self.log_topics.detach().exp()
        for k in topic.unique().tolist():
            where = topic == k
            words[where] = torch.multinomial(probs[k], int(where.sum()), replacement=True)
        return words


class ProdLDA(PyroModule):
    """ProdLDA: logistic-normal topic proportions, product-of-experts words, an amortized Gaussian guide.

    :param num_words: vocabulary size V.
    :param num_topics: K, the number of topics.
    :param hidden: hidden size of the encoder's two softplus layers.
    :param alpha: the symmetric Dirichlet concentration whose Laplace approximation is the prior.
    """

    def __init__(self, num_words, num_topics=20, hidden=100, alpha=1.0):
        super().__init__()
        self.num_words, self.num_topics = num_words, num_topics
        self.encoder = mlp((num_words, hidden, hidden, 2 * num_topics), "softplus")
        self.topics = nn.Linear(num_topics, num_words)  # the bias is a background shared by all topics
        # Laplace approximation of a symmetric Dirichlet(α) in the softmax basis: mean 0 and
        # variance (1/α)(1 − 2/K) + 1/(Kα) in every coordinate.
        variance = (1 - 2 / num_topics) / alpha + 1 / (num_topics * alpha)
        self.register_buffer("prior_loc", torch.zeros(num_topics))
        self.register_buffer("prior_scale", torch.full((num_topics,), math.sqrt(variance)))

    @torch.no_grad()
    def initialize_background(self, counts):
        """Start the background b at the log word frequencies of ``counts`` (add-one smoothed), so the
        topics start free of the words every document uses."""
        _check_counts(counts, self.num_words)
        frequency = counts.sum(0) + 1
        self.topics.bias.copy_((frequency / frequency.sum()).log())

    def model(self, counts):
        _check_counts(counts, self.num_words)
        with pyro.plate("documents", counts.shape[0]):
            h = pyro.sample("proportions", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            pyro.sample("words", BagOfWords(self.topics(torch.softmax(h, -1))), obs=counts)

    def guide(self, counts):
        _check_counts(counts, self.num_words)
        with pyro.plate("documents", counts.shape[0]):
            loc, raw_scale = self.encoder(counts.log1p()).chunk(2, -1)
            pyro.sample("proportions", dist.Normal(loc, softplus(raw_scale) + 1e-3).to_event(1))

    def topic_words(self):
        """``(K, V)`` weights of each topic over the words (the decoder's columns, relative to the background)."""
        return self.topics.weight.detach().T


class LDA(PyroModule):
    """Classical LDA with discrete per-token topics (see the module docs).

    :param num_words: vocabulary size V.
    :param num_topics: K, the number of topics.
    :param alpha: symmetric Dirichlet concentration of θ_d.
    :param hidden: hidden size of the guide's encoder.
    """

    def __init__(self, num_words, num_topics=20, alpha=0.1, hidden=100):
        super().__init__()
        self.num_words, self.num_topics, self.alpha = num_words, num_topics, float(alpha)
        self.topic_logits = nn.Parameter(0.01 * torch.randn(num_topics, num_words))
        self.encoder = mlp((num_words, hidden, num_topics), "softplus")

    def model(self, tokens):
        words, mask = _check_tokens(tokens, self.num_words)
        log_topics = log_softmax(self.topic_logits, -1)
        with pyro.plate("documents", tokens.shape[0], dim=-2):
            theta = pyro.sample(
                "theta", dist.Dirichlet(tokens.new_full((self.num_topics,), self.alpha, dtype=log_topics.dtype))
            )
            with pyro.plate("tokens", tokens.shape[1], dim=-1), pyro.poutine.mask(mask=mask):
                topic = pyro.sample("topic", dist.Categorical(theta))
                pyro.sample("word", WordOfTopic(log_topics, topic), obs=words)

    def guide(self, tokens):
        words, mask = _check_tokens(tokens, self.num_words)
        counts = torch.zeros(tokens.shape[0], self.num_words, device=tokens.device).scatter_add_(1, words, mask.float())
        concentration = softplus(self.encoder(counts.log1p())) + 1e-2
        word_given_topic = log_softmax(self.topic_logits.detach(), -1)[:, words].movedim(0, -1)  # (D, N, K)
        with pyro.plate("documents", tokens.shape[0], dim=-2):
            theta = pyro.sample("theta", dist.Dirichlet(concentration.unsqueeze(-2)))
            with pyro.plate("tokens", tokens.shape[1], dim=-1), pyro.poutine.mask(mask=mask):
                logits = theta.clamp(min=1e-30).log() + word_given_topic
                pyro.sample("topic", dist.Categorical(logits=logits))

    def topic_words(self):
        """``(K, V)`` word probabilities of each topic."""
        return torch.softmax(self.topic_logits.detach(), -1)


def _check_counts(counts, num_words):
    if counts.dim() != 2 or counts.shape[-1] != num_words:
        raise ValueError(
            f"ProdLDA(num_words={num_words}) expects word counts of shape (documents, {num_words}), "
            f"got {tuple(counts.shape)}; use pplgen.data.lee_corpus(...).counts"
        )


def _check_tokens(tokens, num_words):
    if tokens.dim() != 2 or tokens.dtype != torch.int64:
        raise ValueError(
            f"LDA expects int64 token ids of shape (documents, tokens) padded with -1, got "
            f"{tuple(tokens.shape)} {tokens.dtype}; use pplgen.data.lee_corpus(...).tokens"
        )
    if tokens.numel() and int(tokens.max()) >= num_words:
        raise ValueError(f"token id {int(tokens.max())} is outside the vocabulary of {num_words} words")
    return tokens.clamp(min=0), tokens >= 0
