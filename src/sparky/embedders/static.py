"""WordLlama l2_supercat (256 dimensions): static token embeddings, averaged, offline, without torch.

Reads the weights and the tokenizer packaged in the ``wordllama`` wheel (installed without its
dependencies; the package itself is never imported) and gives the vectors of ``WordLlama.load().embed``:
Llama-2 tokens, no special tokens, no truncation, the mean of their embeddings; here also L2-normalised.
"""

from __future__ import annotations

import unicodedata
from itertools import chain

import numpy as np

from .base import Failure, Tokens, classify_common
from .local import package_dir

MODEL = "wordllama-l2-supercat-256"
MAX_WORD_TOKENS = 16  # longest word for chunking (BERT makes any word of over 100 characters one [UNK])
WIDE = ("W", "F")  # East Asian widths of CJK ideographs, kana, hangul and full-width forms
TOKEN_BUDGET = 4096  # tokens gathered per step: the fp16 temporary (2 MB) stays in cache


class WordLlama:
    """An ``Embedder`` averaging WordLlama's static token embeddings (256 dimensions).

    A static model has no attention window: ``embed`` averages every token of a text, however long, and
    truncates nothing. ``max_tokens`` is the window chunking uses all the same: one vector per 512 tokens
    keeps each passage of a long message retrievable instead of diluting it in one average. (A chunk
    tokenised alone may take one token more, the '▁' prepended when it starts without a space: harmless.)
    """

    model = MODEL
    dimensions = 256
    max_tokens = 512
    special_tokens = 0  # wordllama encodes without <s>
    concurrency = 1  # one batch at a time: the model already uses every core

    @property
    def tokenizer(self) -> "WordLlama":
        """The model's own tokenizer (this object: it has ``tokenize`` and ``special_tokens``)."""
        return self

    def classify(self, error: BaseException) -> Failure:
        """A local model has no rate limits or keys: the common classification."""
        return classify_common(error)

    def __init__(self, token_budget: int = TOKEN_BUDGET) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        root = package_dir("wordllama")
        self.token_budget = token_budget
        # The file sets no truncation or padding; wordllama pads, but pooling ignores the padding.
        self._tokenizer = Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
        # Kept in fp16 (16 MB) and summed in float32: the sums of wordllama's float32 copy, as fast.
        self._table = load_file(str(root / "weights" / "l2_supercat_256.safetensors"))["embedding.weight"]

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Model tokens of each text (the chunking hook); see ``_tokens`` for spans and word starts."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [_tokens(text, encoding.offsets) for text, encoding in zip(texts, encodings)]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes in the model (there are no special tokens, and no truncation)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), 256): each the mean of its tokens' embeddings.

        One gather and one segment sum per ``token_budget`` tokens of consecutive texts. A text without
        tokens (only the empty string) gets the zero vector, as in wordllama.
        """
        return mean_rows(self._table, self._tokenizer.encode_batch(texts, add_special_tokens=False),
                         self.token_budget)


def mean_rows(table: np.ndarray, encodings: list, token_budget: int) -> np.ndarray:
    """Each encoding's token rows of ``table`` averaged, L2-normalised, float32; a text without tokens gets
    the zero vector. One gather and one segment sum per ``token_budget`` tokens of consecutive texts."""
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(lengths.sum()))
    sums = np.zeros((len(encodings), table.shape[1]), dtype=np.float32)
    first = 0
    while first < len(encodings):
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + token_budget, side="right")))
        rows = first + np.flatnonzero(lengths[first:last])
        if len(rows):
            gathered = table[ids[starts[first] : ends[last - 1]]]
            sums[rows] = np.add.reduceat(gathered, starts[rows] - starts[first], axis=0, dtype=np.float32)
        first = last
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def _tokens(text: str, offsets: list[tuple[int, int]]) -> Tokens:
    """Spans and word starts of one text's tokens, made to mean what they mean for BERT's tokens.

    Llama folds the space before a word into the word's token ('▁word') and tokenises other whitespace
    (line breaks, indentation) as tokens of its own, so spans leave whitespace out: it lies between spans,
    where chunking looks for paragraph and line breaks (a whitespace token gets an empty span at the end of
    the previous one). The tokenizer has no word ids: a visible token starts a word unless it continues a
    run of letters or digits (CJK characters are words of their own) or the same character (byte fallback).
    Longer runs (base64, hashes, blank lines) are cut into words of ``MAX_WORD_TOKENS`` tokens, so chunking
    always finds a word start near where it wants to cut.
    """
    spans: list[tuple[int, int]] = []
    word_starts: list[bool] = []
    visible_end, previous_start, run = 0, -1, MAX_WORD_TOKENS
    for start, end in offsets:
        piece = text[start:end]
        stripped = piece.lstrip()
        if stripped:
            visible_end = end - (len(stripped) - len(stripped.rstrip()))
            spans.append((end - len(stripped), visible_end))
        else:
            spans.append((visible_end, visible_end))
        begins = start != previous_start and (
            run >= MAX_WORD_TOKENS or bool(stripped) and not (start and _joins(text[start - 1], text[start])))
        run = 1 if begins else run + 1
        word_starts.append(begins)
        previous_start = start
    return Tokens(spans, word_starts)


def _joins(before: str, after: str) -> bool:
    """Whether two adjacent characters belong to one word."""
    return (before.isalnum() and after.isalnum()
            and unicodedata.east_asian_width(before) not in WIDE and unicodedata.east_asian_width(after) not in WIDE)
