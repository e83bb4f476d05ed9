"""OpenAI-compatible embeddings (api.openai.com, Ollama, LM Studio, vLLM, llama.cpp, TEI, LiteLLM) over the
official ``openai`` SDK, opt-in: ``OpenAIEmbedder(model, base_url=None, api_key_env="OPENAI_API_KEY", ...)``.

How it keeps the protocol (``sparky.embedders.base``):

- **One retry layer.** The client has ``max_retries=0``; every SDK error is turned into one of sparky's
  (``RateLimited`` with the delay from ``retry-after-ms`` / ``retry-after``, ``TransientError`` for 5xx,
  408, 409, timeouts and dropped connections, ``FatalEmbedError`` for 401/403/404, ``PermanentEmbedError``
  for the rest) and the pipeline's ``call_with_retries`` decides. Texts already embedded by a call that then
  failed are kept (``_memo``), so the retried call sends only what is missing.
- **Requests.** ``embed(texts)`` gets a whole pipeline batch and sends it as requests of at most 2,048
  inputs and 300,000 tokens (one after another; the pipeline keeps ``concurrency`` batches in flight). A
  400/413/422 saying a request is too large is split in halves and the smaller size remembered; a text that
  is too long alone fails with its index (the pipeline fails that message only). OpenAI models' texts over
  8,192 tokens fail without being sent.
- **Rate limits.** Every request passes ``openai_limits.Gate``: fewer requests in flight after 429s, more
  after a quiet period, and a model of the server's token and request budgets from its ``x-ratelimit-*``
  headers (read with ``with_raw_response``) that holds a request back instead of drawing a 429.
- **The key** is read from the named environment variable, given to the client only, never kept on this
  object, and scrubbed (with anything that looks like a key) from every message this module makes: the
  progress file, the store and the output only ever see those. Without a key, a placeholder the server
  ignores is sent (``NO_KEY``), except to api.openai.com, which needs one.
- **Dimensions** of OpenAI's models are known (or shortened with ``dimensions`` for text-embedding-3-*);
  another model's are learned, the first time they are asked for, from one request embedding the fixed
  text ``PROBE_TEXT`` (none of the user's data).
- **Tokens.** OpenAI's models chunk and count with their own tokenizer (cl100k_base, ``openai_tokens``);
  another server's with ``EstimatedTokenizer`` and a window of 512 tokens unless told ``max_tokens``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from ..errors import SparkyError
from ..words import plural
from .base import (BadOutput, Failure, FatalEmbedError, PermanentEmbedError, RateLimited, TransientError,
                   classify_common)
from .estimate import EstimatedTokenizer
from .openai_limits import Gate, retry_after
from .openai_names import DEFAULT_BASE_URL, clean_url, display_host, recorded_name
from .openai_tokens import CountingTokenizer, estimated_counts
from .pricing import OPENAI_HOST, OPENAI_MODELS, cost, format_cost, list_price
from .retry import RetryPolicy, RetryStopped, call_with_retries

DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 60.0
MAX_INPUTS = 2048  # inputs per request (OpenAI's limit)
MAX_REQUEST_TOKENS = 300_000  # tokens summed over a request's inputs (OpenAI's limit)
OTHER_MAX_TOKENS = 512  # the window assumed for another server's model, unless told
OTHER_SPECIAL_TOKENS = 2  # [CLS]/[SEP] or <s>/</s>: room kept for them on another server
PROBE_TEXT = "dimension probe"  # the only text sent that is not the user's, to learn a model's width
NO_KEY = "sparky-no-key"  # sent as the key to a server that needs none
MEMO_BYTES = 64 * 2**20  # vectors kept from failed calls, for their retry
CHUNK_MARGIN = 16  # tokens chunks of OpenAI's models keep below the 8,192 a text may have
MAX_BAD_REQUESTS_IN_A_ROW = 8  # 400s with no success in between: the server rejects every request

_SIZE = re.compile(
    r"too many inputs|batch size|batch_size|maximum allowed batch|array too long|too many (items|elements|texts)"
    r"|max(imum)? (number of )?inputs|payload too large|request too large|entity too large|per request"
    r"|context length|context window|too long|maximum (input|sequence) length|input length|token limit"
    r"|too many tokens|exceeds? (the )?(max|limit)|reduce (your|the) (prompt|input)|must (be|have) (at most|less)"
    r"|sequence length|input_too_long|exceeds the|too large|larger than",
    re.IGNORECASE)
_BATCH = re.compile(r"too many inputs|batch size|batch_size|maximum allowed batch|array too long|too many "
                    r"(items|elements|texts)|max(imum)? (number of )?inputs|payload too large|request too large"
                    r"|entity too large", re.IGNORECASE)
_REQUEST_TOKENS = re.compile(r"per request|total tokens", re.IGNORECASE)
_FORMAT = re.compile(r"encoding_format|base64", re.IGNORECASE)
_KEYLIKE = re.compile(r"(?i)\b(?:sk|rk|pk|sess)-[A-Za-z0-9_\-*.]{6,}|\bBearer\s+\S+|(?<=api[_-]key[=:])\s*[^\s,;&]+")


class _TooLarge(Exception):
    """A 400/413/422 saying the request (or one of its texts) is too large: split it."""

    def __init__(self, reason: str, batch: bool, request_tokens: bool) -> None:
        super().__init__(reason)
        self.reason, self.batch, self.request_tokens = reason, batch, request_tokens


class _FormatRejected(Exception):
    """The server does not take ``encoding_format=base64``."""


@dataclass
class EmbedderStats:
    """What was sent, for the summary, a benchmark or a test."""

    requests: int = 0  # answered with vectors
    texts: int = 0
    tokens: int = 0  # as counted here (exact for OpenAI's models, estimated for others)
    failures: dict[str, int] = field(default_factory=dict)  # status or error kind -> count
    splits: int = 0  # requests split because the server said they were too large
    reused: int = 0  # texts whose vectors were kept from a failed call, not sent again


class OpenAIEmbedder:
    """An ``Embedder`` for an OpenAI-compatible ``/embeddings`` endpoint (see the module docstring)."""

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 dimensions: int | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                 max_tokens: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 width: int | None = None) -> None:
        """``dimensions`` is asked of the server (text-embedding-3-*); ``width`` is the vector width already
        known (a store's recorded one), so no probe request learns it."""
        try:
            import openai
        except ImportError:
            raise SparkyError("the openai embedder needs the openai extra: "
                              "pip install 'sparky-memory[openai]'") from None
        if not model or not model.strip():
            raise SparkyError("name the embedding model to use (--model), e.g. text-embedding-3-small")
        if concurrency < 1:
            raise SparkyError("--concurrency must be at least 1")
        if dimensions is not None and dimensions < 1:
            raise SparkyError("--dimensions must be at least 1")
        self._sdk = openai
        self.api_model = model.strip()
        request_url = (base_url or DEFAULT_BASE_URL).strip()
        self.base_url = clean_url(request_url)  # shown and recorded: no credentials, query or fragment
        self.host = display_host(self.base_url)
        known = OPENAI_MODELS.get(self.api_model)
        self.known_model = known is not None
        self._send_dimensions = self._requested_dimensions(dimensions, known)
        self._dimensions: int | None = dimensions or (known[1] if known else None) or width
        self.model = recorded_name(self.api_model, self.base_url, self._send_dimensions)

        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        self.key_source = api_key_env if key else None  # the variable's name, never its value
        if not key and self.host == OPENAI_HOST:
            raise FatalEmbedError(f"{OPENAI_HOST} needs an API key: set {api_key_env or 'OPENAI_API_KEY'} "
                                  "(or name the variable that holds it with --api-key-env)")
        self._secrets = _secret_pieces(key)
        self._client = openai.OpenAI(api_key=key or NO_KEY, base_url=request_url, max_retries=0, timeout=timeout)
        del key

        if known and max_tokens is not None and max_tokens > known[2]:
            raise SparkyError(f"{self.api_model} takes at most {known[2]:,} tokens a text (--max-tokens)")
        if known:
            self.tokenizer = CountingTokenizer()
            # A chunk tokenised alone may take a token or two more than its tokens in the message (the
            # word it starts with loses its leading space): chunks keep CHUNK_MARGIN tokens below the limit.
            self.max_tokens = max_tokens or known[2] - CHUNK_MARGIN
            self.max_input_tokens: int | None = known[2]
        else:
            self.tokenizer = EstimatedTokenizer(special_tokens=OTHER_SPECIAL_TOKENS)
            self.max_tokens = max_tokens or OTHER_MAX_TOKENS
            self.max_input_tokens = None  # the server says; our estimate is only an upper bound
        if self.max_tokens <= self.tokenizer.special_tokens + 64:
            raise SparkyError("--max-tokens is too small to chunk messages (at least 128)")
        self.concurrency = int(concurrency)
        self.timeout = timeout
        self.gate = Gate(self.concurrency)
        self.stop_event = threading.Event()  # see bind_stop
        self.stats = EmbedderStats()
        self.max_inputs = MAX_INPUTS  # lowered when the server says a request has too many inputs
        self.max_request_tokens = MAX_REQUEST_TOKENS  # lowered when it says a request has too many tokens
        self._format = "base64"
        self._memo: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._bad_requests_in_a_row = 0
        self._fatal: FatalEmbedError | None = None  # once the key or model is refused, nothing more is sent

    @property
    def multilingual(self) -> bool:
        """OpenAI's own models are trained on many languages; a model on another server may not be."""
        return self.host == OPENAI_HOST

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.api_model!r} at {self.base_url})"

    # --- the protocol ----------------------------------------------------------------------------------

    @property
    def dimensions(self) -> int:
        """The vectors' width: known for OpenAI's models, else learned once from the probe request."""
        if self._dimensions is None:
            with self._probe_lock:
                if self._dimensions is None:
                    self._dimensions = self._probe()
        return self._dimensions

    @property
    def needs_probe(self) -> bool:
        """Whether one request with ``PROBE_TEXT`` will be sent first to learn the dimensions."""
        return self._dimensions is None

    def bind_stop(self, event: threading.Event) -> None:
        """Share the run's stop event: a request waiting for the rate limits is then never sent after a stop."""
        self.stop_event = event

    def classify(self, error: BaseException) -> Failure:
        """The common classification (every SDK error was turned into sparky's own types), scrubbed."""
        failure = classify_common(error)
        return replace(failure, reason=self.scrub(failure.reason))

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors of ``texts``, in as many requests as the limits need."""
        width = self.dimensions
        out = np.zeros((len(texts), width), dtype=np.float32)
        if not texts:
            return out
        digests = [_digest(text) for text in texts]
        todo = self._reuse(digests, out)
        counts = self.count_tokens([texts[i] for i in todo])
        if self.max_input_tokens is not None:
            for index, count in zip(todo, counts):
                if count > self.max_input_tokens:
                    raise PermanentEmbedError(index, f"the text is {count:,} tokens, more than the "
                                                     f"{self.max_input_tokens:,} {self.api_model} takes")
        filled: list[int] = []
        try:
            self._embed_group(texts, todo, counts, out, filled)
        except BaseException:
            self._keep(digests, out, filled)
            raise
        return out

    # --- what the CLI asks ------------------------------------------------------------------------------

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text is counted as: exact for OpenAI's models, an upper-bound estimate for others."""
        if isinstance(self.tokenizer, CountingTokenizer):
            return self.tokenizer.count(texts)
        return estimated_counts(texts)

    @property
    def tokens_are_exact(self) -> bool:
        return isinstance(self.tokenizer, CountingTokenizer)

    def cost(self, tokens: int) -> float | None:
        """Dollars at the list price for sending ``tokens`` (None: not api.openai.com, or unknown model)."""
        return cost(self.api_model, self.host, tokens)

    def scrub(self, text: str) -> str:
        """``text`` without the key (or any long piece of it) or anything that looks like a key."""
        return _KEYLIKE.sub("[key]", _without_pieces(text, self._secrets))

    def close(self) -> None:
        self._client.close()

    # --- requests ---------------------------------------------------------------------------------------

    def _requested_dimensions(self, dimensions: int | None, known: tuple[float, int, int] | None) -> int | None:
        """The ``dimensions`` to send: None for a model's own width (and for models that cannot shorten)."""
        if dimensions is None or (known and dimensions == known[1]):
            return None
        if known and not self.api_model.startswith("text-embedding-3"):
            raise SparkyError(f"{self.api_model} gives {known[1]} dimensions and cannot shorten them; "
                              "only text-embedding-3-* take --dimensions")
        if known and dimensions > known[1]:
            raise SparkyError(f"{self.api_model} gives at most {known[1]} dimensions")
        return dimensions

    def _requests(self, counts: list[int]) -> list[tuple[int, int]]:
        """``[start, end)`` ranges of consecutive texts, each a request within the input and token limits."""
        ranges: list[tuple[int, int]] = []
        start, tokens = 0, 0
        max_inputs, max_tokens = self.max_inputs, self.max_request_tokens
        for position, count in enumerate(counts):
            if position > start and (position - start >= max_inputs or tokens + count > max_tokens):
                ranges.append((start, position))
                start, tokens = position, 0
            tokens += count
        if start < len(counts):
            ranges.append((start, len(counts)))
        return ranges

    def _embed_group(self, texts: list[str], indices: list[int], counts: list[int], out: np.ndarray,
                     filled: list[int]) -> None:
        """Embed ``texts[i]`` for the ``indices`` into ``out`` (noting them in ``filled``): in requests within
        the limits; a request the server finds too large is split (in halves, or to the size it allowed),
        and a text too large alone fails with its index."""
        ranges = self._requests(counts)
        if len(ranges) > 1:
            for start, end in ranges:
                self._embed_group(texts, indices[start:end], counts[start:end], out, filled)
            return
        try:
            vectors = self._send([texts[i] for i in indices], sum(counts))
        except _TooLarge as error:
            if len(indices) == 1:
                raise PermanentEmbedError(indices[0], error.reason) from None
            with self._lock:
                self.stats.splits += 1
                if error.batch:
                    self.max_inputs = max(1, min(self.max_inputs, len(indices) // 2))
                elif error.request_tokens:
                    self.max_request_tokens = max(1, min(self.max_request_tokens, sum(counts) // 2))
            middle = len(indices) // 2
            for part in (slice(None, middle), slice(middle, None)):
                self._embed_group(texts, indices[part], counts[part], out, filled)
            return
        if vectors.shape[1] != out.shape[1]:
            raise BadOutput(f"{self.host} returned vectors of {vectors.shape[1]} dimensions, not {out.shape[1]}")
        out[indices] = vectors
        filled.extend(indices)

    def _send(self, texts: list[str], tokens: int) -> np.ndarray:
        """One HTTP request through the gate; its vectors (normalised), or a sparky error."""
        try:
            return self._send_once(texts, tokens)
        except _FormatRejected:
            self._format = "float"  # the server does not take base64: plain JSON floats from now on
            return self._send_once(texts, tokens)

    def _send_once(self, texts: list[str], tokens: int) -> np.ndarray:
        sdk = self._sdk
        options: dict = {"input": texts, "model": self.api_model, "encoding_format": self._format}
        if self._send_dimensions is not None:
            options["dimensions"] = self._send_dimensions
        if self._fatal is not None:
            raise FatalEmbedError(str(self._fatal))
        ticket = self.gate.enter(tokens, self.stop_event)
        headers: Mapping[str, str] | None = None
        limited, delay = False, None
        try:
            if self._fatal is not None:  # refused while this request waited at the gate
                raise FatalEmbedError(str(self._fatal))
            raw = self._client.embeddings.with_raw_response.create(**options)
            headers = raw.headers
            response = raw.parse()
        except sdk.APIStatusError as error:
            headers = error.response.headers
            limited = error.status_code == 429
            delay = retry_after(headers) if limited else None
            translated = self._status_error(error, delay, len(texts))
            if isinstance(translated, FatalEmbedError):
                self._fatal = translated
            raise translated from None
        except sdk.APITimeoutError:
            self._count_failure("timeout")
            raise TransientError(f"{self.host} did not answer within {self.timeout:g}s") from None
        except sdk.APIConnectionError as error:
            self._count_failure("connection")
            cause = error.__cause__ or error.__context__
            detail = f" ({type(cause).__name__})" if cause is not None else ""
            raise TransientError(self.scrub(f"could not reach {self.host}{detail}")) from None
        except sdk.OpenAIError as error:
            self._count_failure("invalid answer")
            raise BadOutput(self.scrub(f"{self.host} gave an answer that is not an embeddings response: "
                                       f"{_short(str(error))}")) from None
        finally:
            self.gate.leave(ticket, headers, rate_limited=limited, delay=delay)
        vectors = self._vectors(response, len(texts))
        with self._lock:
            self._bad_requests_in_a_row = 0
            self.stats.requests += 1
            self.stats.texts += len(texts)
            self.stats.tokens += tokens
        return vectors

    def _vectors(self, response: object, count: int) -> np.ndarray:
        """The answer's vectors in input order, float32, L2-normalised; BadOutput when any is missing."""
        data = getattr(response, "data", None)
        if not isinstance(data, list):
            raise BadOutput(f"{self.host} gave an answer without embeddings")
        if sorted(getattr(item, "index", -1) for item in data) != list(range(count)):
            raise BadOutput(f"{self.host} returned {len(data)} embeddings for {count} texts")
        rows = []
        for item in sorted(data, key=lambda item: item.index):
            value = item.embedding
            try:
                if isinstance(value, str):
                    row = np.frombuffer(base64.b64decode(value), dtype="<f4")
                else:
                    row = np.asarray(value, dtype=np.float32)
            except (ValueError, TypeError):
                raise BadOutput(f"{self.host} returned an embedding that is not a list of numbers") from None
            rows.append(row)
        if len({row.shape for row in rows}) != 1 or rows[0].ndim != 1 or rows[0].size == 0:
            raise BadOutput(f"{self.host} returned embeddings of different or no widths")
        matrix = np.vstack(rows).astype(np.float32, copy=False)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms > 0, norms, 1.0)

    def _status_error(self, error, delay: float | None, count: int) -> Exception:
        """The sparky error for an HTTP error status (scrubbed)."""
        status = error.status_code
        message = self.scrub(_short(_server_message(error)))
        said = f"{self.host} answered {status}" + (f": {message}" if message else "")
        self._count_failure(str(status))
        if status == 429:
            wait = "" if delay is None else f" (asked to wait {delay:g}s)"
            return RateLimited(f"{said}{wait}", retry_after=delay)
        if status in (401, 403):
            if self.key_source:
                return FatalEmbedError(f"{said} — the server refused the key in ${self.key_source}")
            return FatalEmbedError(f"{said} — the server needs a key: set OPENAI_API_KEY, or name the variable "
                                   "holding it with --api-key-env")
        if status == 404:
            return FatalEmbedError(f"{said} — no embedding model {self.api_model!r} or no embeddings endpoint "
                                   f"at {self.base_url}")
        if status in (408, 409) or status >= 500:
            return TransientError(said)
        if status in (400, 413, 422) and self._format == "base64" and _FORMAT.search(message):
            return _FormatRejected(said)
        if status == 413 or (status in (400, 422) and _SIZE.search(message)):
            return _TooLarge(said, batch=status == 413 or bool(_BATCH.search(message)) and count > 1,
                             request_tokens=bool(_REQUEST_TOKENS.search(message)))
        with self._lock:
            self._bad_requests_in_a_row += 1
            systematic = self._bad_requests_in_a_row >= MAX_BAD_REQUESTS_IN_A_ROW
        if systematic:
            return FatalEmbedError(f"{said} — {plural(MAX_BAD_REQUESTS_IN_A_ROW, 'request')} in a row were "
                                   "refused: the server takes none of them")
        return PermanentEmbedError(None, said)

    def _count_failure(self, kind: str) -> None:
        with self._lock:
            self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1

    def _probe(self) -> int:
        """The width of this model's vectors, from one request with ``PROBE_TEXT`` (no user data)."""
        try:
            vectors = call_with_retries(lambda: self._send([PROBE_TEXT], 4), self.classify, RetryPolicy(),
                                        self.stop_event)
        except (_TooLarge, PermanentEmbedError, BadOutput) as error:
            raise FatalEmbedError(self.scrub(f"{self.host} cannot embed with {self.api_model}: "
                                             f"{getattr(error, 'reason', None) or error}")) from None
        except (TransientError, RetryStopped) as error:
            raise FatalEmbedError(self.scrub(f"{self.host} did not give the width of {self.api_model}'s vectors:"
                                             f" {error}")) from None
        return int(vectors.shape[1])

    # --- vectors kept from a failed call ----------------------------------------------------------------

    def _reuse(self, digests: list[bytes], out: np.ndarray) -> list[int]:
        """Fill ``out`` with vectors kept from an earlier failed call; the indices still to send."""
        todo = []
        with self._lock:
            for index, digest in enumerate(digests):
                vector = self._memo.pop(digest, None) if self._memo else None
                if vector is not None and vector.shape[0] == out.shape[1]:
                    out[index] = vector
                    self.stats.reused += 1
                else:
                    todo.append(index)
        return todo

    def _keep(self, digests: list[bytes], out: np.ndarray, filled: list[int]) -> None:
        """Keep the vectors a failing call got, for its retry (the oldest are dropped past MEMO_BYTES)."""
        if not filled:
            return
        with self._lock:
            for index in filled:
                self._memo[digests[index]] = out[index].copy()
            limit = max(1, MEMO_BYTES // (4 * out.shape[1]))
            while len(self._memo) > limit:
                self._memo.popitem(last=False)


def plan_text(embedder: OpenAIEmbedder, texts_count: int, tokens: int) -> str:
    """What will be sent where, said once before the first request (the CLI asks to confirm unless --yes)."""
    counted = "" if embedder.tokens_are_exact else "about "
    key = f"with the key in ${embedder.key_source}" if embedder.key_source else "without a key"
    lines = [f"This sends {plural(texts_count, 'text')} ({counted}{tokens:,} tokens) to {embedder.host} "
             f"({embedder.base_url}) to be embedded by {embedder.api_model}, {key}."]
    price = list_price(embedder.api_model, embedder.host)
    if price is not None:
        lines.append(f"Estimated cost at the list price (${price:g} per 1M tokens): "
                     f"{format_cost(embedder.cost(tokens))}.")
    elif embedder.host == OPENAI_HOST:
        lines.append(f"Estimated cost: unknown (no list price known for {embedder.api_model}).")
    else:
        lines.append(f"Estimated cost: unknown (not {OPENAI_HOST}; a server of your own may cost nothing).")
    if embedder.needs_probe:
        lines.append(f"First, one request with the fixed text {PROBE_TEXT!r} (none of your data) learns the "
                     "model's vector width.")
    lines.append(f"Requests of up to {embedder.max_inputs:,} texts and {embedder.max_request_tokens:,} tokens, "
                 f"{embedder.concurrency} at a time; texts are chunked to {embedder.max_tokens:,} tokens.")
    return "\n".join(lines)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


SECRET_PIECE = 6  # characters: any run of the key this long in a message is taken out


def _secret_pieces(key: str) -> frozenset[str]:
    """Every piece of the key of ``SECRET_PIECE`` characters (a server may echo part of a key)."""
    width = min(SECRET_PIECE, len(key))
    return frozenset(key[start:start + width] for start in range(len(key) - width + 1)) if key else frozenset()


def _without_pieces(text: str, pieces: frozenset[str]) -> str:
    """``text`` with every stretch covered by pieces of the key replaced by ``[key]``."""
    if not pieces:
        return text
    width = len(next(iter(pieces)))
    covered = [False] * len(text)
    for start in range(len(text) - width + 1):
        if text[start:start + width] in pieces:
            covered[start:start + width] = [True] * width
    if not any(covered):
        return text
    out, index = [], 0
    while index < len(text):
        if covered[index]:
            while index < len(text) and covered[index]:
                index += 1
            out.append("[key]")
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def _server_message(error) -> str:
    """The server's own explanation from an error body (``{"error": {"message": ...}}`` or text)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        for name in ("message", "error", "detail"):
            value = body.get(name)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
        return str(body)
    if isinstance(body, str):
        return body
    return str(getattr(error, "message", "") or "")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
