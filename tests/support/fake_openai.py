"""A small OpenAI-compatible embeddings server on 127.0.0.1 for tests and benchmarks (stdlib http.server).

``POST /v1/embeddings`` answers with deterministic vectors (from a hash of each text, L2-normalised; the
``dimensions`` parameter shortens them) as JSON floats or base64 (``encoding_format``), with ``usage``
and, when rate limits are set, OpenAI's ``x-ratelimit-*`` headers. It can be told to:

- answer scripted responses to the next requests (``script``): ``Reply(status, headers, message)``,
  ``CLOSE`` (drop the connection without answering), ``Hang(seconds)`` (answer only after that long);
- fail a share of requests at random (``fault_rate``, seeded): 500, 503 or a dropped connection;
- require a key (``key``): 401 otherwise, echoing part of the key it got, as OpenAI does; refuse every
  key after ``revoke_after`` answers (a key revoked mid-run);
- reject a request with more than ``max_inputs`` inputs or ``max_request_tokens`` tokens, or with a text of
  more than ``max_input_tokens`` tokens (400, OpenAI's and vLLM's wording);
- take ``latency`` seconds per answer, and enforce requests/min and tokens/min limits (``rpm``, ``tpm``)
  as budgets refilled continuously up to a minute's worth, starting with ``burst`` seconds' worth (see
  ``Bucket``), answering 429 with ``retry-after-ms`` / ``retry-after`` when over (400 for a request
  over a whole minute's budget);
- hold every request after the first ``hold_after`` until ``release()``, then drop it unanswered (to kill
  a client mid-request).

Everything is recorded with the server's own clock (``time.monotonic`` of this process): ``requests`` (one
``Record`` each: arrival time, status, inputs, tokens), ``embedded`` (how often each text was answered).

Run alone (a benchmark's server): ``python tests/support/fake_openai.py --port-file F [--latency 0.3]
[--rpm N --tpm N] [--stats-file S]``; it serves until SIGTERM, then writes its counts to the stats file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

NATIVE = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


@dataclass(frozen=True)
class Reply:
    """A scripted answer: ``status`` with these headers and an OpenAI-style error message."""

    status: int
    headers: dict = field(default_factory=dict)
    message: str = "scripted error"


@dataclass(frozen=True)
class Hang:
    """Answer normally, but only after ``seconds`` (past the client's timeout)."""

    seconds: float


CLOSE = "close"  # drop the connection without an answer


@dataclass
class Record:
    """One request as the server saw it."""

    time: float  # time.monotonic() at arrival
    wall: float  # time.time() at arrival
    status: int  # 0 when the connection was dropped
    inputs: int
    tokens: int
    model: str = ""
    encoding_format: str = ""
    dimensions: int | None = None
    authorization: str = ""


def count_tokens(model: str, texts: list[str]) -> list[int]:
    """Tokens as OpenAI counts them for its models (cl100k_base), else sparky's estimate."""
    from sparky.embedders.openai_tokens import encoder, estimated_counts

    if model in NATIVE:
        return [len(encoder().ids(text)) for text in texts]
    return estimated_counts(texts)


def vector(text: str, dimensions: int) -> np.ndarray:
    """The deterministic unit vector of a text."""
    seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    values = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return values / np.linalg.norm(values)


class Bucket:
    """A budget of ``per_minute`` a minute, as OpenAI documents its limits: refilled continuously (a
    sixtieth of it a second) up to one minute's worth, starting with ``start`` seconds' worth at the first
    request (not a full minute: a run is then limited from its first seconds, as by a limit enforced over
    short periods).
    A request is admitted when the budget holds all of it."""

    def __init__(self, per_minute: float, start: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = per_minute
        self.level = min(self.rate * start, self.capacity)
        self.stamp: float | None = None  # the budget starts filling at the first request

    def _refill(self, now: float) -> None:
        if self.stamp is None:
            self.stamp = now
        self.level = min(self.capacity, self.level + self.rate * (now - self.stamp))
        self.stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits (inf: never, it is over a minute's budget)."""
        self._refill(now)
        if amount > self.capacity:
            return float("inf")
        return max((amount - self.level) / self.rate, 0.0)

    def take(self, amount: float) -> None:
        self.level -= amount

    def headers(self, kind: str, now: float) -> dict:
        self._refill(now)
        reset = max(self.capacity - self.level, 0.0) / self.rate
        return {f"x-ratelimit-limit-{kind}": str(int(self.limit)),
                f"x-ratelimit-remaining-{kind}": str(max(int(self.level), 0)),
                f"x-ratelimit-reset-{kind}": f"{reset:.3f}s"}


class FakeOpenAI:
    """The server (see the module docstring); ``with FakeOpenAI(...) as server:`` starts and stops it."""

    def __init__(self, dimensions: int = 64, key: str | None = None, latency: float = 0.0,
                 rpm: float | None = None, tpm: float | None = None, burst: float = 2.0, seed: int = 0,
                 retry_header: str = "retry-after-ms") -> None:
        self.dimensions = dimensions
        self.key = key
        self.latency = latency
        self.fault_rate = 0.0
        self.max_inputs: int | None = None
        self.max_request_tokens: int | None = None
        self.max_input_tokens: int | None = None
        self.script: list = []
        self.hold_after: int | None = None
        self.revoke_after: int | None = None  # after this many answers, every key is refused (401)
        self.retry_header = retry_header  # how a 429 over the limits says when to come back
        self.rpm = Bucket(rpm, burst) if rpm else None
        self.tpm = Bucket(tpm, burst) if tpm else None
        self.requests: list[Record] = []
        self.embedded: Counter[str] = Counter()
        self.answered = 0  # requests answered with vectors
        self.in_flight = 0
        self.peak_in_flight = 0
        self.held = 0  # requests waiting for release()
        self.lock = threading.Lock()
        self._rng = random.Random(seed)
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # --- control ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeOpenAI":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def release(self) -> None:
        """End held requests (``hold_after``), unanswered; none is held after this."""
        self.hold_after = None
        self._release.set()

    def reset_records(self) -> None:
        with self.lock:
            self.requests.clear()
            self.embedded.clear()
            self.answered = 0

    def texts_sent(self) -> int:
        with self.lock:
            return sum(self.embedded.values())

    def statuses(self) -> Counter[int]:
        with self.lock:
            return Counter(record.status for record in self.requests)

    # --- answering --------------------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived, wall = time.monotonic(), time.time()
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if handler.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            return self._error(handler, 404, "Unknown request URL", arrived, 0, 0)
        try:
            body = json.loads(raw)
            texts = body["input"]
            texts = [texts] if isinstance(texts, str) else list(texts)
            model = str(body.get("model", ""))
            assert all(isinstance(text, str) for text in texts)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._error(handler, 400, "could not parse the JSON body of your request", arrived, 0, 0)
        encoding = body.get("encoding_format") or "float"
        dimensions = body.get("dimensions")
        tokens = count_tokens(model, texts)
        record = Record(arrived, wall, 0, len(texts), sum(tokens), model, encoding, dimensions,
                        handler.headers.get("Authorization", ""))
        with self.lock:
            self.requests.append(record)
            action = self.script.pop(0) if self.script else None
            if action is None and self.fault_rate and self._rng.random() < self.fault_rate:
                action = self._rng.choice([Reply(500, message="The server had an error while processing your request."),
                                           Reply(503, message="The engine is currently overloaded."), CLOSE])
            hold = self.hold_after is not None and len(self.requests) > self.hold_after
        if hold:  # its client is to be killed meanwhile: once released, the connection is dropped
            with self.lock:
                self.held += 1
            self._release.wait()
            handler.close_connection = True
            return
        if action == CLOSE:
            handler.close_connection = True
            return
        if isinstance(action, Reply):
            return self._error(handler, action.status, action.message, arrived, len(texts), sum(tokens),
                               record, action.headers)
        if isinstance(action, Hang):
            time.sleep(action.seconds)
        with self.lock:
            revoked = self.revoke_after is not None and self.answered >= self.revoke_after
        if revoked or (self.key is not None and handler.headers.get("Authorization") != f"Bearer {self.key}"):
            given = handler.headers.get("Authorization", "").removeprefix("Bearer ")
            shown = f"{given[:6]}{'*' * 20}{given[-4:]}" if len(given) > 10 else given
            return self._error(handler, 401, f"Incorrect API key provided: {shown}. You can find your API key "
                               "at https://platform.openai.com/account/api-keys.", arrived, len(texts),
                               sum(tokens), record, code="invalid_api_key")
        problem = self._too_large(texts, tokens)
        if problem:
            return self._error(handler, 400, problem, arrived, len(texts), sum(tokens), record)
        limited = self._rate_limit(sum(tokens))
        if limited is not None:
            seconds, message = limited
            if seconds == float("inf"):
                return self._error(handler, 400, message, arrived, len(texts), sum(tokens), record)
            return self._error(handler, 429, message, arrived, len(texts), sum(tokens), record,
                               self._retry_headers(seconds), code="rate_limit_exceeded")
        width = dimensions or NATIVE.get(model, self.dimensions)
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            data = []
            for index, text in enumerate(texts):
                values = vector(text, width)
                embedding = base64.b64encode(values.astype("<f4").tobytes()).decode() if encoding == "base64" \
                    else [float(value) for value in values]
                data.append({"object": "embedding", "index": index, "embedding": embedding})
            payload = {"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}}
            self._send(handler, 200, payload, self._limit_headers())
        finally:
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            record.status = 200
            self.answered += 1
            self.embedded.update(texts)

    def _too_large(self, texts: list[str], tokens: list[int]) -> str | None:
        if self.max_inputs is not None and len(texts) > self.max_inputs:
            return f"batch size {len(texts)} > maximum allowed batch size {self.max_inputs}"
        if self.max_request_tokens is not None and sum(tokens) > self.max_request_tokens:
            return f"Requested {sum(tokens)} tokens, max {self.max_request_tokens} tokens per request"
        if self.max_input_tokens is not None:
            for count in tokens:
                if count > self.max_input_tokens:
                    return (f"This model's maximum context length is {self.max_input_tokens} tokens, however you "
                            f"requested {count} tokens. Please reduce your prompt.")
        return None

    def _rate_limit(self, tokens: int) -> tuple[float, str] | None:
        """None when the request is admitted (its budget taken), else (seconds to wait, message)."""
        with self.lock:
            now = time.monotonic()
            waits = {kind: bucket.wait(amount, now) for kind, bucket, amount in
                     (("requests", self.rpm, 1), ("tokens", self.tpm, tokens)) if bucket is not None}
            if not waits or max(waits.values()) <= 0:
                for bucket, amount in ((self.rpm, 1), (self.tpm, tokens)):
                    if bucket is not None:
                        bucket.take(amount)
                return None
            kind = max(waits, key=waits.get)
            seconds = waits[kind]
            bucket = self.tpm if kind == "tokens" else self.rpm
            if seconds == float("inf"):
                return seconds, (f"Request too large on tokens per min: Limit {int(bucket.limit)}, Requested "
                                 f"{tokens}. The input must be reduced in order to run successfully.")
            return seconds, (f"Rate limit reached on {kind} per min: Limit {int(bucket.limit)}, Requested "
                             f"{tokens if kind == 'tokens' else 1}. Please try again in {seconds:.3f}s.")

    def _retry_headers(self, seconds: float) -> dict:
        headers = self._limit_headers()
        if self.retry_header == "retry-after-ms":
            headers["retry-after-ms"] = str(max(int(seconds * 1000) + 1, 1))
        else:
            headers["retry-after"] = str(max(int(seconds + 0.999), 1))
        return headers

    def _limit_headers(self) -> dict:
        now = time.monotonic()
        headers: dict = {}
        with self.lock:
            for kind, bucket in (("requests", self.rpm), ("tokens", self.tpm)):
                if bucket is not None:
                    headers.update(bucket.headers(kind, now))
        return headers

    def _error(self, handler, status: int, message: str, arrived: float, inputs: int, tokens: int,
               record: Record | None = None, headers: dict | None = None, code: str | None = None) -> None:
        if record is None:
            record = Record(arrived, time.time(), status, inputs, tokens)
            with self.lock:
                self.requests.append(record)
        record.status = status
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(handler, status, {"error": {"message": message, "type": kind, "param": None, "code": code}},
                   headers or {})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to answer
            handler.close_connection = True


def _handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

        def do_POST(self) -> None:  # noqa: N802
            server.handle(self)

        def log_message(self, *args: object) -> None:
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass

    return Handler


def main() -> None:
    import argparse
    import signal
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--stats-file", type=Path)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--tpm", type=float)
    parser.add_argument("--burst", type=float, default=2.0)
    parser.add_argument("--key")
    parser.add_argument("--dimensions", type=int, default=64)
    args = parser.parse_args()
    server = FakeOpenAI(dimensions=args.dimensions, key=args.key, latency=args.latency, rpm=args.rpm,
                        tpm=args.tpm, burst=args.burst).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    args.port_file.write_text(server.url)
    stopped.wait()
    if args.stats_file:
        statuses = server.statuses()
        args.stats_file.write_text(json.dumps({
            "requests": len(server.requests), "answered": server.answered, "texts": server.texts_sent(),
            "tokens": sum(r.tokens for r in server.requests if r.status == 200),
            "statuses": {str(k): v for k, v in statuses.items()}, "peak_in_flight": server.peak_in_flight,
            "first_wall": min((r.wall for r in server.requests), default=None),
            "last_wall": max((r.wall for r in server.requests), default=None),
        }))
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
