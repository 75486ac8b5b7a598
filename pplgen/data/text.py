"""Text corpora for topic models (:mod:`pplgen.models.lda`), as word counts and padded token ids.

>>> from pplgen import data
>>> train, test = data.lee_corpus("train"), data.lee_corpus("test")
>>> train.counts.shape, train.tokens.shape   # (240, V), (240, N); test has 60 documents
"""

import re
from dataclasses import dataclass

import torch

from pplgen.data.files import _package_folder


@dataclass(frozen=True)
class Corpus:
    """Documents as word counts ``(D, V)`` and as padded token ids ``(D, N)`` (−1 past each document's end)."""

    counts: torch.Tensor
    tokens: torch.Tensor
    vocabulary: tuple[str, ...]

    @property
    def num_words(self):
        return len(self.vocabulary)


#: Held-out documents of the ``lee`` corpus: every fifth one (60 of 300).
LEE_TEST_EVERY = 5


def lee_corpus(split="train", *, min_count=5):
    """The Lee background corpus (300 Australian news articles) that gensim ships with its tests.

    Words are lower-cased alphabetic tokens of at least three letters,
    without scikit-learn's English stop words, kept when they occur at least
    ``min_count`` times in the whole corpus (the vocabulary is the same for
    every split). ``split`` is ``"train"`` (240 documents), ``"test"`` (every
    fifth document, 60) or ``"all"``.
    """
    # scikit-learn is an optional dependency (pplgen[data]), and slow to import.
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    folder = _package_folder("gensim", "the lee corpus is read from gensim's test data")
    path = folder / "test" / "test_data" / "lee_background.cor"
    documents = [
        [word for word in re.findall(r"[a-z]{3,}", line.lower()) if word not in ENGLISH_STOP_WORDS]
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    frequency = {}
    for document in documents:
        for word in document:
            frequency[word] = frequency.get(word, 0) + 1
    vocabulary = tuple(sorted(word for word, count in frequency.items() if count >= min_count))
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = [[index[word] for word in document if word in index] for document in documents]
    keep = {
        "train": lambda d: d % LEE_TEST_EVERY != LEE_TEST_EVERY - 1,
        "test": lambda d: d % LEE_TEST_EVERY == LEE_TEST_EVERY - 1,
    }
    ids = [doc for d, doc in enumerate(ids) if split == "all" or keep[split](d)]
    tokens = torch.full((len(ids), max(len(doc) for doc in ids)), -1, dtype=torch.int64)
    counts = torch.zeros(len(ids), len(vocabulary))
    for d, doc in enumerate(ids):
        tokens[d, : len(doc)] = torch.tensor(doc, dtype=torch.int64)
        counts[d] = torch.bincount(torch.tensor(doc, dtype=torch.int64), minlength=len(vocabulary)).float()
    return Corpus(counts=counts, tokens=tokens, vocabulary=vocabulary)
