"""The local MiniLM embedders (real model), the retry helper, and the test-only fault injection."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sparky.embedders import (
    FatalEmbedError,
    PermanentEmbedError,
    RateLimited,
    RetryPolicy,
    RetryStopped,
    TransientError,
    call_with_retries,
    classify_common,
    get_embedder,
    resolve_embedder,
)
from sparky.embedders import local
from sparky.embedders.testing import FaultyEmbedder
from sparky.embedders.onnx_bert import build_bert_onnx
from sparky.errors import SparkyError


def load_bench():
    """bench/embedders.py as a module, for its deterministic chat-like text generator."""
    path = Path(__file__).resolve().parent.parent / "bench" / "embedders.py"
    spec = importlib.util.spec_from_file_location("bench_embedders", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chat_texts = load_bench().chat_texts

VARIED = [
    "How do I reverse a list in Python?",
    "Use reversed(items) or items[::-1]; the slice makes a copy.",
    "Can you suggest a vegetarian lasagne recipe for six people?",
    "The meeting with the landlord moved to Thursday at 10am.",
    "Translate 'good morning' into Japanese: おはようございます",
    "我想学习中文，有什么好的方法吗？",
    "Ça va très bien, merci ! Et toi ?",
    "🙂🚀 launch day!!!",
    "SELECT count(*) FROM messages WHERE role = 'user';",
    "x",
] + chat_texts(40, seed=11)  # 50 texts for the fp32/int8 agreement; the first 16 elsewhere
FEW = VARIED[:16]


@pytest.fixture(scope="module")
def minilm():
    return get_embedder("minilm")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_vectors_are_384_dimensional_normalised_float32(minilm):
    vectors = minilm.embed(FEW)
    assert minilm.dimensions == 384 and minilm.max_tokens == 256
    assert vectors.shape == (len(FEW), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def test_embedding_is_deterministic(minilm):
    np.testing.assert_array_equal(minilm.embed(FEW), minilm.embed(FEW))


def test_order_is_preserved_despite_length_sorting(minilm):
    texts = FEW[::-1]  # lengths deliberately unsorted
    together = minilm.embed(texts)
    alone = np.vstack([minilm.embed([text]) for text in texts])
    assert cosines(together, alone).min() > 0.99999


def test_a_vector_does_not_depend_on_the_texts_embedded_with_it():
    q8 = get_embedder("minilm")  # one activation scale per call: batch-mates would change it
    texts = ["Ok.", "Short one.", "SELECT 1;", "Thanks!", *FEW[:4]]
    alone = np.vstack([q8.embed([text]) for text in texts])
    np.testing.assert_array_equal(q8.embed(texts), alone)
    np.testing.assert_array_equal(q8.embed(texts[::-1])[::-1], alone)


def test_similar_texts_are_closer_than_unrelated_ones(minilm):
    cat, kitten, tax = minilm.embed(["The cat sleeps on the sofa.", "A kitten is napping on the couch.",
                                     "Quarterly tax returns are due in April."])
    assert cat @ kitten > 0.5 > cat @ tax
    assert cat @ kitten > kitten @ tax + 0.3


def test_texts_longer_than_the_window_are_truncated_not_rejected(minilm):
    long_text = " ".join(["memory"] * 600)
    assert minilm.count_tokens([long_text, "hi"]) == [602, 3]
    assert minilm.embed([long_text]).shape == (1, 384)


def test_fp32_agrees_with_the_int8_export():
    fp32, int8 = get_embedder("minilm-fp32"), get_embedder("minilm-int8")
    assert fp32.model != int8.model  # the store must not mix them silently
    similarity = cosines(fp32.embed(VARIED), int8.embed(VARIED))
    assert similarity.mean() >= 0.99 and similarity.min() >= 0.99


def test_q8_default_stays_close_to_fp32():
    fp32, q8 = get_embedder("minilm-fp32"), get_embedder("minilm")
    assert q8.model == local.Q8_MODEL != fp32.model  # the store must not mix them silently
    similarity = cosines(fp32.embed(VARIED), q8.embed(VARIED))
    assert similarity.mean() >= 0.99 and similarity.min() >= 0.97, (similarity.mean(), similarity.min())
    cat, kitten, tax = q8.embed(["The cat sleeps on the sofa.", "A kitten is napping on the couch.",
                                 "Quarterly tax returns are due in April."])
    assert cat @ kitten > 0.5 > cat @ tax


def test_fused_graph_computes_what_the_plain_graph_computes(tmp_path):
    path = tmp_path / "fused.onnx"
    path.write_bytes(build_bert_onnx(local.model_dir(), fused=True))
    fused = local.OnnxMiniLM("fused", path)
    similarity = cosines(fused.embed(VARIED), get_embedder("minilm-fp32").embed(VARIED))
    assert similarity.min() > 0.99999


def test_one_instance_per_runtime_and_unknown_names_are_clear():
    assert get_embedder("minilm") is get_embedder("minilm-q8") is get_embedder()
    assert get_embedder("minilm-fp32") is not get_embedder("minilm")
    with pytest.raises(SparkyError, match="minilm-int8"):
        get_embedder("mini")


def test_the_store_model_picks_the_embedder_when_none_is_named():
    assert resolve_embedder(None, None) == "minilm"
    assert resolve_embedder(None, local.FP32_MODEL) == "minilm-fp32"  # stores built before q8 was the default
    assert resolve_embedder(None, local.Q8_MODEL) == "minilm"
    assert resolve_embedder(None, local.INT8_MODEL) == "minilm-int8"
    assert resolve_embedder(None, "wordllama-l2-supercat-256") == "wordllama"
    assert resolve_embedder("minilm-fp32", local.Q8_MODEL) == "minilm-fp32"  # the store check says no later
    with pytest.raises(SparkyError, match="text-embedding-3-small.*cannot run"):
        resolve_embedder(None, "text-embedding-3-small")
    with pytest.raises(SparkyError, match="unknown embedder 'nope'"):
        resolve_embedder("nope", None)


def test_a_missing_model_package_is_a_clear_error():
    with pytest.raises(SparkyError, match="the model package no_such_model_pkg is not installed; run `make install`"):
        local.package_dir("no_such_model_pkg")


def test_q8_model_is_quantised_once_deterministically_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKY_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f"{local.FP32_MODEL}-q8-g0-0123456789abcdef.onnx"  # an older graph version
    stale.write_bytes(b"old")
    path = local.q8_path()
    assert not stale.exists()
    assert "-q8-g%d-" % local.GRAPH_VERSION in path.name and path.parent == tmp_path / "cache"
    assert not list(path.parent.glob("*fp32*"))  # built from the weights, not from a cached fp32 file
    assert 20_000_000 < path.stat().st_size < 40_000_000  # int8 weights: about a quarter of fp32's 90 MB
    first = path.read_bytes()
    assert local.quantize_q8(build_bert_onnx(local.model_dir(), fused=True)) == first  # the same bytes every time
    monkeypatch.setattr(local, "quantize_q8", lambda *_: pytest.fail("quantised an existing cache file"))
    assert local.q8_path() == path
    vector = local.OnnxMiniLM(local.Q8_MODEL, path).embed(["reuse the cache"])
    assert cosines(vector, get_embedder("minilm").embed(["reuse the cache"]))[0] > 0.99999


def test_fp32_model_is_built_atomically_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKY_CACHE_DIR", str(tmp_path / "cache"))
    def disk_full(*_: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full)
        with pytest.raises(OSError, match="disk full"):
            local.fp32_path()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file, no temp file left behind

    path = local.fp32_path()
    assert path.parent == tmp_path / "cache" and path.stat().st_size > 80_000_000
    names = sorted(p.name for p in path.parent.iterdir())
    memo = [name for name in names if name.startswith(".model.safetensors.") and name.endswith(".sha256")]
    assert len(memo) == 1 and sorted([path.name, *memo]) == names  # the model and the weights' hash memo only
    assert "-g%d-" % local.GRAPH_VERSION in path.name  # graph version and weights hash name the file

    import sparky.embedders.onnx_bert as onnx_bert

    monkeypatch.setattr(onnx_bert, "build_bert_onnx", lambda *_: pytest.fail("rebuilt an existing cache file"))
    assert local.fp32_path() == path
    vector = local.OnnxMiniLM(local.FP32_MODEL, path).embed(["reuse the cache"])
    assert cosines(vector, get_embedder("minilm-fp32").embed(["reuse the cache"]))[0] > 0.99999


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    def denied(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setenv("SPARKY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(local, "_write_atomically", denied)
    with pytest.raises(SparkyError, match="SPARKY_CACHE_DIR"):
        local.fp32_path()


class Flaky:
    """Fails with the given exceptions, then returns 'ok'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class RecordedWaits:
    """A stop Event whose ``wait`` records the seconds asked for and returns at once (never stopped)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


def test_retries_back_off_exponentially_with_full_jitter():
    stop = RecordedWaits()
    fn = Flaky(TransientError(), TimeoutError(), ConnectionResetError())
    result = call_with_retries(fn, classify_common, RetryPolicy(attempts=4, base_delay=0.5), stop, rng=lambda: 0.5)
    assert result == "ok" and fn.calls == 4
    assert stop.waits == [0.25, 0.5, 1.0]  # rng() * base * 2**retry


def test_backoff_is_capped_at_max_delay():
    stop = RecordedWaits()
    fn = Flaky(*[TransientError()] * 4)
    call_with_retries(fn, classify_common, RetryPolicy(attempts=5, base_delay=10, max_delay=15), stop,
                      rng=lambda: 0.9)
    assert stop.waits == pytest.approx([9.0, 13.5, 13.5, 13.5])


def test_retry_after_is_honoured_and_capped():
    stop = RecordedWaits()
    fn = Flaky(RateLimited("429", retry_after=7), RateLimited("429", retry_after=120))
    call_with_retries(fn, classify_common, RetryPolicy(max_delay=30), stop, rng=lambda: 0.0)
    assert stop.waits == [7.0, 30.0]


def test_rate_limits_have_their_own_larger_budget():
    """Eleven 429s in a row still succeed under the default policy; three transient errors do not."""
    stop = RecordedWaits()
    fn = Flaky(*[RateLimited("429")] * 11)
    assert call_with_retries(fn, classify_common, RetryPolicy(), stop, rng=lambda: 0.0) == "ok"
    assert fn.calls == 12
    fn = Flaky(*[TransientError("down")] * 3)
    with pytest.raises(TransientError):
        call_with_retries(fn, classify_common, RetryPolicy(attempts=3), RecordedWaits(), rng=lambda: 0.0)
    assert fn.calls == 3


def test_permanent_and_fatal_errors_are_not_retried_and_the_last_transient_one_is_raised():
    for error in (ValueError("bad input"), PermanentEmbedError(1, "bad"), FatalEmbedError("bad key")):
        stop = RecordedWaits()
        fn = Flaky(error)
        with pytest.raises(type(error)):
            call_with_retries(fn, classify_common, RetryPolicy(), stop)
        assert fn.calls == 1 and stop.waits == []
    stop = RecordedWaits()
    fn = Flaky(*[TimeoutError("slow")] * 5)
    with pytest.raises(TimeoutError):
        call_with_retries(fn, classify_common, RetryPolicy(attempts=3), stop, rng=lambda: 0.0)
    assert fn.calls == 3 and len(stop.waits) == 2


def test_a_stop_ends_a_backoff_wait_at_once():
    import threading

    stop = threading.Event()
    waited = []
    fn = Flaky(*[RateLimited("429", retry_after=3600)] * 3)

    def on_wait(failure, seconds):
        waited.append(seconds)
        stop.set()  # as the signal handler does while the worker waits

    with pytest.raises(RetryStopped):
        call_with_retries(fn, classify_common, RetryPolicy(max_delay=3600), stop, on_wait=on_wait)
    assert waited == [3600] and fn.calls == 1


def test_the_common_classification_of_failures():
    class HTTPError(Exception):
        def __init__(self, status_code: int) -> None:
            self.status_code = status_code

    kinds = {
        "transient": [TransientError(), TimeoutError(), ConnectionResetError(), HTTPError(503), HTTPError(408),
                      sqlite3.OperationalError("database is locked"), sqlite3.OperationalError("database is busy")],
        "rate_limited": [HTTPError(429), RateLimited("slow down", retry_after=2)],
        "fatal": [HTTPError(401), HTTPError(403), HTTPError(404), FatalEmbedError("bad key")],
        "permanent": [ValueError(), HTTPError(400), sqlite3.OperationalError("no such table: chunks"),
                      PermanentEmbedError(0, "bad")],
    }
    for kind, errors in kinds.items():
        assert [classify_common(error).kind for error in errors] == [kind] * len(errors), kind
    assert classify_common(RateLimited("slow down", retry_after=2)).delay == 2
    assert classify_common(PermanentEmbedError(3, "bad")).index == 3


class FakeEmbedder:
    model, dimensions, max_tokens, special_tokens = "fake", 2, 8, 2

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)


def test_fault_injection_transient_rate_is_seeded():
    def failures(spec: str) -> list[bool]:
        faulty = FaultyEmbedder(FakeEmbedder(), spec)
        outcomes = []
        for _ in range(1000):
            try:
                faulty.embed(["a"])
                outcomes.append(False)
            except TransientError:
                outcomes.append(True)
        return outcomes

    first = failures("transient=0.3,seed=1")
    assert 250 < sum(first) < 350 and first == failures("transient=0.3,seed=1")
    assert first != failures("transient=0.3,seed=2")


def test_fault_injection_permanent_marker_names_the_text_and_get_embedder_never_wraps():
    embedder = FaultyEmbedder(get_embedder("minilm"), "permanent=POISON")
    assert embedder.model == local.Q8_MODEL
    for _ in range(2):  # every time, not randomly
        with pytest.raises(PermanentEmbedError) as caught:
            embedder.embed(["fine", "also fine", "this has POISON in it"])
        assert caught.value.index == 2 and classify_common(caught.value).kind == "permanent"
    assert embedder.embed(["fine"]).shape == (1, 384)
    os.environ["SPARKY_FAULTS"] = "permanent=POISON"  # the old switch: must do nothing now
    try:
        assert not isinstance(get_embedder("minilm"), FaultyEmbedder)
    finally:
        del os.environ["SPARKY_FAULTS"]


class CountingTokenizer:
    """Wraps a tokenizers.Tokenizer and records the texts each encode_batch call receives."""

    def __init__(self, inner) -> None:
        self.inner, self.encoded = inner, []

    def encode_batch(self, texts, **options):
        self.encoded.extend(texts)
        return self.inner.encode_batch(texts, **options)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_embed_reuses_the_tokens_chunking_just_computed_and_gives_the_same_vectors():
    embedder = local.OnnxMiniLM(local.Q8_MODEL, local.q8_path(), token_budget=0)
    texts = ["fits the window", "Ça va? 我想学习中文", "too long " * 300, ""]
    fresh = embedder.embed(texts)
    embedder._tokenizer = CountingTokenizer(embedder._tokenizer)
    embedder.tokenize(texts)
    embedder._tokenizer.encoded.clear()
    np.testing.assert_array_equal(embedder.embed(texts), fresh)
    assert embedder._tokenizer.encoded == ["too long " * 300]  # only the text longer than the window
    embedder.embed(texts[:1])
    assert embedder._tokenizer.encoded[-1] == texts[0]  # used once: a second embed tokenises again


def test_remembered_tokens_are_bounded():
    embedder = get_embedder("minilm")
    embedder.tokenize([f"message number {i}" for i in range(local.RECENT_TEXTS + 500)])
    assert len(embedder._recent) == local.RECENT_TEXTS
    embedder._recent.clear()
