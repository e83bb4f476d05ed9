"""The MCP server (``sparky mcp``) as assistants use it: started as a real subprocess and spoken to with the
SDK's own client, over stdio and over streamable HTTP, against a store ingested from the bundled sample.

One stdio session per scenario records every call it makes; the tests below read those records, so the
embedding model is loaded by as few servers as possible. Waits are on events (a line the server logs when
it listens, a trace site of the ingester); the timeouts only guard against a hang.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import SAMPLE, generate_export, sparky_subprocess, wait_for_trace
from support.postgres import postgres_database, postgres_server, postgres_url  # noqa: F401

HANG = 300  # seconds: a guard against a hung server, never a measure of speed
KETTLE = "235c2cdd-96f2-6d30-4fee-6177286a56cd"  # "Descaling a kettle with citric acid" in the sample
KETTLE_QUESTION = "How do I get thick limescale out of my electric kettle?"
QUERY = "getting limescale out of a kettle"
TOKEN = "test-token-0123456789abcdef"
TOOLS = {"search_memory", "get_conversation", "list_conversations", "memory_stats"}


@pytest.fixture(scope="module")
def memory_db(tmp_path_factory) -> Path:
    """The sample export ingested once (default model) through the real CLI."""
    folder = tmp_path_factory.mktemp("mcp-memory")
    process = sparky_subprocess(["ingest", str(SAMPLE), "--progress-file", str(folder / "progress.json"), "-q"],
                                cwd=folder)
    _, err = process.communicate(timeout=HANG)
    assert process.returncode == 0, err
    return folder / "sparky_memory.db"


def db_rows(db: Path, sql: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, params).fetchall()


@asynccontextmanager
async def stdio_session_at(url: str, cwd: Path, errlog: Path) -> AsyncIterator[ClientSession]:
    """An initialized client session with ``sparky mcp --db url`` over stdio; its stderr goes to ``errlog``."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "sparky", "mcp", "--db", url], cwd=str(cwd))
    with errlog.open("w") as log:
        async with stdio_client(params, errlog=log) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def stdio_session(db: Path, errlog: Path):
    """``stdio_session_at`` for a SQLite store file."""
    return stdio_session_at(str(db), db.parent, errlog)


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content)


@dataclass
class Recorded:
    """What one scenario's calls answered, by name, and the server's stderr."""

    calls: dict[str, Any] = field(default_factory=dict)
    log: str = ""


# One stdio session: every tool, valid and invalid


@pytest.fixture(scope="module")
def stdio(memory_db, tmp_path_factory) -> Recorded:
    recorded = Recorded()
    errlog = tmp_path_factory.mktemp("mcp-stdio") / "stderr.txt"

    async def scenario() -> None:
        calls = recorded.calls
        with anyio.fail_after(HANG):
            async with stdio_session(memory_db, errlog) as session:
                calls["tools"] = await session.list_tools()
                calls["search"] = await session.call_tool("search_memory", {"query": QUERY, "k": 3})
                first = calls["search"].structured_content["exchanges"][0]["citation"]
                calls["around"] = await session.call_tool("get_conversation", {
                    "id": first["conversation"], "around_message": first["message"], "window": 1})
                calls["transcript"] = await session.call_tool("get_conversation", {"id": KETTLE})
                calls["page 1"] = await session.call_tool("search_memory", {"query": "python error", "k": 2})
                calls["page 2"] = await session.call_tool("search_memory", {"query": "python error", "k": 2,
                                                                            "offset": 2})
                calls["filtered"] = await session.call_tool("search_memory", {"query": QUERY, "role": "assistant"})
                calls["no match"] = await session.call_tool("search_memory", {"query": QUERY, "since": "2099-01-01"})
                calls["list"] = await session.call_tool("list_conversations", {"limit": 5})
                calls["list next"] = await session.call_tool("list_conversations", {"limit": 5, "offset": 5})
                calls["list query"] = await session.call_tool("list_conversations", {"query": "kettle"})
                calls["list dates"] = await session.call_tool("list_conversations", {"since": "2099"})
                calls["stats"] = await session.call_tool("memory_stats", {})
                calls["resources"] = await session.list_resources()
                calls["templates"] = await session.list_resource_templates()
                calls["resource"] = await session.read_resource(f"conversation://{KETTLE}")
                for name, tool, arguments in INVALID:
                    calls[name] = await session.call_tool(tool, arguments)
                try:
                    await session.read_resource("conversation://no-such-conversation")
                except MCPError as exc:
                    calls["bad resource"] = exc
                calls["alive"] = await session.call_tool("memory_stats", {})
        recorded.log = errlog.read_text()

    anyio.run(scenario)
    return recorded


INVALID = [  # (record name, tool, arguments): each must be a tool error, and the server must carry on
    ("no query", "search_memory", {}),
    ("blank query", "search_memory", {"query": "   "}),
    ("k too big", "search_memory", {"query": QUERY, "k": 500}),
    ("bad role", "search_memory", {"query": QUERY, "role": "robot"}),
    ("bad date", "search_memory", {"query": QUERY, "since": "last tuesday"}),
    ("bad conversation filter", "search_memory", {"query": QUERY, "conversation": "no-such-conversation"}),
    ("no id", "get_conversation", {}),
    ("unknown id", "get_conversation", {"id": "no-such-conversation"}),
    ("unknown message", "get_conversation", {"id": KETTLE, "around_message": "ffffffffffff"}),
    ("negative window", "get_conversation", {"id": KETTLE, "around_message": "ffff", "window": -1}),
    ("zero limit", "list_conversations", {"limit": 0}),
    ("bad until", "list_conversations", {"until": "2024-13-45"}),
    ("unknown tool", "drop_memory", {}),
]


@pytest.mark.slow
def test_tools_are_listed_with_typed_arguments(stdio):
    tools = {tool.name: tool for tool in stdio.calls["tools"].tools}
    assert set(tools) == TOOLS
    search = tools["search_memory"].input_schema
    assert search["required"] == ["query"]
    assert search["properties"]["k"]["type"] == "integer" and search["properties"]["k"]["default"] == 5
    assert {"role", "since", "until", "conversation", "source", "offset"} <= set(search["properties"])
    assert set(tools["get_conversation"].input_schema["properties"]) >= {"id", "around_message", "window"}
    assert set(tools["list_conversations"].input_schema["properties"]) >= {"query", "since", "until", "limit"}
    assert all(tool.annotations.read_only_hint and tool.output_schema for tool in tools.values())
    assert all(tool.description for tool in tools.values())


@pytest.mark.slow
def test_search_finds_a_sample_message_with_its_citation(stdio, memory_db):
    result = stdio.calls["search"]
    assert not result.is_error
    exchanges = result.structured_content["exchanges"]
    first = exchanges[0]
    assert first["citation"]["conversation"] == KETTLE
    assert first["title"] == "Descaling a kettle with citric acid"
    assert KETTLE_QUESTION in first["question"] and "citric acid" in first["answer"].lower()
    keys = [key for (key,) in db_rows(memory_db, "SELECT m.key FROM messages m JOIN conversations v ON"
                                                 " v.id = m.conversation WHERE v.conversation_id = ?", KETTLE)]
    assert any(key.startswith(first["citation"]["message"]) for key in keys)
    assert first["date"].startswith("2024-") and first["source"] == "chatgpt"
    text = text_of(result)
    assert f"conversation {KETTLE} message {first['citation']['message']}" in text and KETTLE_QUESTION in text
    assert [item["rank"] for item in exchanges] == list(range(1, len(exchanges) + 1))


@pytest.mark.slow
def test_a_citation_leads_to_its_message(stdio):
    cited = stdio.calls["search"].structured_content["exchanges"][0]["citation"]
    page = stdio.calls["around"].structured_content
    assert not stdio.calls["around"].is_error
    assert page["id"] == KETTLE and cited["message"] in [message["id"] for message in page["messages"]]
    assert 1 <= len(page["messages"]) <= 3


@pytest.mark.slow
def test_a_whole_conversation_is_read_in_order(stdio, memory_db):
    stored = db_rows(memory_db, "SELECT m.role, m.text FROM messages m JOIN conversations v ON v.id = m.conversation"
                                " WHERE v.conversation_id = ? ORDER BY m.position", KETTLE)
    page = stdio.calls["transcript"].structured_content
    assert [(message["role"], message["text"]) for message in page["messages"]] == stored
    assert page["total"] == len(stored) and page["next_offset"] is None
    assert KETTLE_QUESTION in text_of(stdio.calls["transcript"])


@pytest.mark.slow
def test_search_pages_and_filters(stdio):
    first, second = (stdio.calls[name].structured_content for name in ("page 1", "page 2"))
    assert [item["rank"] for item in first["exchanges"]] == [1, 2] and first["next_offset"] == 2
    assert [item["rank"] for item in second["exchanges"]][:1] == [3]
    cited = {(item["citation"]["conversation"], item["citation"]["message"]) for item in first["exchanges"]}
    assert not cited & {(item["citation"]["conversation"], item["citation"]["message"])
                        for item in second["exchanges"]}
    assert all(item["matched"] == "answer" for item in stdio.calls["filtered"].structured_content["exchanges"])


@pytest.mark.slow
def test_no_good_match_is_said_as_such(stdio):
    result = stdio.calls["no match"]
    assert not result.is_error
    assert result.structured_content["no_good_match"] is True and result.structured_content["exchanges"] == []
    assert text_of(result) == "No good match in the memory for this query."


@pytest.mark.slow
def test_conversations_are_listed_most_recent_first_and_paged(stdio, memory_db):
    stored = db_rows(memory_db, "SELECT count(*) FROM conversations")[0][0]
    first, following = stdio.calls["list"].structured_content, stdio.calls["list next"].structured_content
    assert first["total"] == stored and len(first["conversations"]) == 5 and first["next_offset"] == 5
    lasts = [item["last"] for item in first["conversations"] + following["conversations"]]
    assert lasts == sorted(lasts, reverse=True)
    assert not {item["id"] for item in first["conversations"]} & {item["id"] for item in following["conversations"]}
    found = stdio.calls["list query"].structured_content["conversations"]
    assert [item["id"] for item in found] == [KETTLE]
    assert stdio.calls["list dates"].structured_content["total"] == 0
    assert "No conversation matches." in text_of(stdio.calls["list dates"])


@pytest.mark.slow
def test_stats_describe_the_memory(stdio, memory_db):
    stats = stdio.calls["stats"].structured_content
    conversations, messages, chunks = db_rows(
        memory_db, "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
                   " (SELECT count(*) FROM chunks)")[0]
    assert (stats["conversations"], stats["messages"], stats["chunks"]) == (conversations, messages, chunks)
    assert sum(stats["sources"].values()) == conversations and stats["model"] and stats["dimensions"] == 384
    assert stats["first"] <= stats["last"]


@pytest.mark.slow
def test_every_conversation_is_a_resource(stdio, memory_db):
    uris = [str(resource.uri) for resource in stdio.calls["resources"].resources]
    ids = [conversation_id for (conversation_id,) in db_rows(memory_db, "SELECT conversation_id FROM conversations")]
    assert sorted(uris) == sorted(f"conversation://{conversation_id}" for conversation_id in ids)
    assert [template.uri_template for template in stdio.calls["templates"].resource_templates] \
        == ["conversation://{id}"]
    content = stdio.calls["resource"].contents[0].text
    assert "Descaling a kettle with citric acid" in content and KETTLE_QUESTION in content


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, _, _ in INVALID])
def test_invalid_arguments_are_clear_tool_errors(stdio, name):
    result = stdio.calls[name]
    assert result.is_error
    message = text_of(result)
    assert message and "Traceback" not in message
    expected = {"no query": "query", "blank query": "empty query", "k too big": "less than or equal to 20",
                "bad role": "role", "bad date": "not a date", "bad conversation filter": "no conversation",
                "no id": "id", "unknown id": "no conversation", "unknown message": "no message",
                "negative window": "window", "zero limit": "limit", "bad until": "not a date",
                "unknown tool": "drop_memory"}[name]
    assert expected in message.lower()


@pytest.mark.slow
def test_the_server_survives_bad_calls(stdio):
    assert isinstance(stdio.calls["bad resource"], MCPError)
    assert "no conversation" in stdio.calls["bad resource"].message
    assert not stdio.calls["alive"].is_error
    assert stdio.calls["alive"].structured_content == stdio.calls["stats"].structured_content


@pytest.mark.slow
def test_queries_are_not_logged(stdio):
    assert "serving" in stdio.log and "search_memory answered" in stdio.log
    assert "limescale" not in stdio.log and "last tuesday" not in stdio.log


# Streamable HTTP


class HttpServer:
    """``sparky mcp --http`` as a subprocess; ``url`` is known once it logs that it listens."""

    def __init__(self, db: Path, *args: str, token: str | None = None) -> None:
        env = {key: value for key, value in os.environ.items() if key != "SPARKY_MCP_TOKEN"}
        if token is not None:
            env["SPARKY_MCP_TOKEN"] = token
        self.process = sparky_subprocess(["mcp", "--db", str(db), *args], cwd=db.parent, env=env)
        self.lines: list[str] = []
        self.url: str | None = None
        self._listening = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if (match := re.search(r" at (http://\S+)", line)) and self.url is None:
                self.url = match[1].replace("0.0.0.0", "127.0.0.1")
                self._listening.set()
        self._listening.set()  # ended: wait_listening says so

    def wait_listening(self) -> str:
        assert self._listening.wait(HANG), "the server never said it listens"
        assert self.url is not None, f"the server ended (exit {self.process.poll()}): {''.join(self.lines)}"
        return self.url

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=HANG)
        return "".join(self.lines)


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


@asynccontextmanager
async def http_session(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with httpx2.AsyncClient(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@pytest.fixture(scope="module")
def remote(memory_db) -> Recorded:
    """A server bound off loopback (every interface) with --allow-remote and a token: calls with and without."""
    server = HttpServer(memory_db, "--http", "0.0.0.0:0", "--allow-remote", token=TOKEN)
    recorded = Recorded()

    async def scenario() -> None:
        calls = recorded.calls
        url = server.wait_listening()
        with anyio.fail_after(HANG):
            async with httpx2.AsyncClient() as client:
                ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                calls["no token"] = await client.post(url, json=ping)
                calls["wrong token"] = await client.post(url, json=ping, headers={"Authorization": "Bearer nope"})
                calls["basic auth"] = await client.post(url, json=ping, auth=("user", TOKEN))
            try:
                async with http_session(url):
                    calls["client without token"] = "connected"
            except Exception as exc:  # noqa: BLE001 - the refusal is what is recorded
                calls["client without token"] = exc
            async with http_session(url, TOKEN) as session:
                calls["tools"] = await session.list_tools()
                calls["search"] = await session.call_tool("search_memory", {"query": QUERY, "k": 2})
                calls["conversation"] = await session.call_tool("get_conversation", {"id": KETTLE})
                calls["bad"] = await session.call_tool("get_conversation", {"id": "no-such-conversation"})
                calls["stats"] = await session.call_tool("memory_stats", {})

    try:
        anyio.run(scenario)
    finally:
        recorded.log = server.stop()
    return recorded


@pytest.mark.slow
def test_http_refuses_requests_without_the_token(remote):
    for name in ("no token", "wrong token", "basic auth"):
        response = remote.calls[name]
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer ")
    refused = remote.calls["client without token"]
    assert isinstance(refused, BaseException) and any(isinstance(exc, MCPError) for exc in leaves(refused))


@pytest.mark.slow
def test_http_serves_a_client_with_the_token(remote):
    assert {tool.name for tool in remote.calls["tools"].tools} == TOOLS
    exchanges = remote.calls["search"].structured_content["exchanges"]
    assert exchanges[0]["citation"]["conversation"] == KETTLE
    assert KETTLE_QUESTION in text_of(remote.calls["conversation"])
    assert remote.calls["bad"].is_error and "no conversation" in text_of(remote.calls["bad"])
    assert not remote.calls["stats"].is_error


@pytest.mark.slow
def test_http_logs_neither_the_token_nor_the_queries(remote):
    assert "serving" in remote.log and "plain HTTP" in remote.log
    assert TOKEN not in remote.log and "limescale" not in remote.log


@pytest.mark.slow
def test_http_on_loopback_needs_no_token(memory_db):
    server = HttpServer(memory_db, "--http", "127.0.0.1:0")
    stats: dict = {}

    async def scenario() -> None:
        with anyio.fail_after(HANG):
            async with http_session(server.wait_listening()) as session:
                stats.update((await session.call_tool("memory_stats", {})).structured_content)

    try:
        anyio.run(scenario)
    finally:
        log = server.stop()
    assert stats["conversations"] == db_rows(memory_db, "SELECT count(*) FROM conversations")[0][0]
    assert "plain HTTP" not in log


@pytest.mark.slow
@pytest.mark.parametrize("args, token, expected", [
    (["--http", "0.0.0.0:0"], TOKEN, "needs --allow-remote"),
    (["--http", "0.0.0.0:0", "--allow-remote"], None, "needs a bearer token"),
    (["--http", "0.0.0.0:0", "--allow-remote"], "short", "too short"),
    (["--http", "127.0.0.1"], None, "give HOST:PORT"),
])
def test_http_refuses_to_start_unsafely(memory_db, args, token, expected):
    env = {key: value for key, value in os.environ.items() if key != "SPARKY_MCP_TOKEN"}
    if token is not None:
        env["SPARKY_MCP_TOKEN"] = token
    result = subprocess.run([sys.executable, "-m", "sparky", "mcp", "--db", str(memory_db), *args], env=env,
                            capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    assert token is None or len(token) < 16 or token not in result.stderr


@pytest.mark.slow
def test_a_client_that_leaves_at_once_ends_the_server_cleanly(memory_db):
    """stdin closed before the model finished loading: exit 0, not an abort in the middle of the load."""
    result = subprocess.run([sys.executable, "-m", "sparky", "mcp", "--db", str(memory_db)], capture_output=True,
                            text=True, timeout=HANG, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "serving" in result.stderr and "terminate" not in result.stderr and result.stdout == ""


def test_a_missing_store_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparky", "mcp", "--db", str(tmp_path / "none.db")],
                            capture_output=True, text=True, timeout=HANG, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "no memory store here" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


# The PostgreSQL store


@pytest.mark.slow
def test_the_same_answers_over_postgresql(memory_db, postgres_url, tmp_path, stdio):
    """The sample copied into PostgreSQL (vectors and all) answers as the SQLite store does."""
    from sparky.stores import open_store
    from sparky.stores.copy import copy_store

    source, target = open_store(str(memory_db), create=False), open_store(postgres_url)
    try:
        copy_store(source, target)
    finally:
        source.close()
        target.close()
    calls: dict[str, Any] = {}

    async def scenario() -> None:
        with anyio.fail_after(HANG):
            async with stdio_session_at(postgres_url, tmp_path, tmp_path / "stderr.txt") as session:
                calls["search"] = await session.call_tool("search_memory", {"query": QUERY, "k": 3})
                calls["transcript"] = await session.call_tool("get_conversation", {"id": KETTLE})
                calls["list"] = await session.call_tool("list_conversations", {"limit": 5})
                calls["stats"] = await session.call_tool("memory_stats", {})

    anyio.run(scenario)
    assert calls["search"].structured_content["exchanges"][0]["citation"] \
        == stdio.calls["search"].structured_content["exchanges"][0]["citation"]
    for name in ("transcript", "list"):
        assert calls[name].structured_content == stdio.calls[name].structured_content, name
    assert calls["stats"].structured_content == stdio.calls["stats"].structured_content


# Beside a running ingestion


@pytest.mark.slow
def test_queries_are_answered_while_an_ingestion_writes(memory_db, tmp_path):
    """A search while the ingester holds a write transaction open (paused at ``before_commit``), then the
    ingestion run to its end: the same server sees the new conversations without a restart."""
    db = tmp_path / "memory.db"
    shutil.copy(memory_db, db)
    export = generate_export(tmp_path / "more", conversations=2, messages=6, seed=11)
    trace = tmp_path / "trace.txt"
    ingest = ["ingest", str(export), "--db", str(db), "--progress-file", str(tmp_path / "progress.json"), "-q"]
    before = db_rows(db, "SELECT conversation_id FROM conversations")
    calls: dict[str, Any] = {}

    async def scenario() -> None:
        with anyio.fail_after(HANG):
            async with stdio_session(db, tmp_path / "stderr.txt") as session:
                ingester = sparky_subprocess(ingest, cwd=tmp_path, env={
                    "SPARKY_TRACE_FILE": str(trace), "SPARKY_TRACE_PAUSE": f"before_commit:{HANG}"})
                await anyio.to_thread.run_sync(lambda: wait_for_trace(trace, "before_commit", process=ingester))
                calls["during"] = await session.call_tool("search_memory", {"query": QUERY, "k": 2})
                calls["stats during"] = await session.call_tool("memory_stats", {})
                calls["still paused"] = ingester.poll() is None
                ingester.send_signal(signal.SIGTERM)  # a stop ends the pause; nothing half-written stays
                calls["stopped"] = await anyio.to_thread.run_sync(ingester.wait)
                finished = await anyio.to_thread.run_sync(lambda: subprocess.run(
                    [sys.executable, "-m", "sparky", *ingest], cwd=tmp_path, capture_output=True, text=True))
                calls["finished"] = finished.returncode, finished.stderr
                calls["stats after"] = await session.call_tool("memory_stats", {})
                calls["list after"] = await session.call_tool("list_conversations", {"limit": 100})
                new = [item for item in calls["list after"].structured_content["conversations"]
                       if (item["id"],) not in before]
                calls["new"] = new
                calls["new conversation"] = await session.call_tool("get_conversation", {"id": new[0]["id"]})
                calls["search new"] = await session.call_tool("search_memory", {
                    "query": new[0]["title"], "conversation": new[0]["id"]})

    anyio.run(scenario)
    assert calls["still paused"], "the search did not run while the ingester held its transaction open"
    assert not calls["during"].is_error
    assert calls["during"].structured_content["exchanges"][0]["citation"]["conversation"] == KETTLE
    assert calls["stats during"].structured_content["conversations"] == len(before)
    assert calls["stopped"] == 130
    assert calls["finished"][0] == 0, calls["finished"][1]
    after = db_rows(db, "SELECT count(*) FROM conversations")[0][0]
    assert calls["stats after"].structured_content["conversations"] == after == len(before) + 2
    assert len(calls["new"]) == 2 and calls["list after"].structured_content["total"] == after
    assert not calls["new conversation"].is_error and calls["new conversation"].structured_content["total"] > 0
    exchanges = calls["search new"].structured_content["exchanges"]
    assert exchanges and {item["citation"]["conversation"] for item in exchanges} == {calls["new"][0]["id"]}


# The pieces, without a server


@pytest.mark.slow
def test_long_answers_are_paged_within_the_budget(memory_db):
    from sparky.mcp.budget import estimate_tokens
    from sparky.mcp.tools import MemoryTools

    tools = MemoryTools(str(memory_db), budget=500)
    try:
        listed = tools.list_conversations(limit=200)
        following = tools.list_conversations(limit=200, offset=listed.structured_content["next_offset"])
    finally:
        tools.close()
    first = listed.structured_content
    assert 0 < len(first["conversations"]) < first["total"] and first["next_offset"] == len(first["conversations"])
    assert estimate_tokens(listed.content[0].text) <= 500 + 60  # the paging line comes on top
    assert following.structured_content["conversations"][0]["id"] not in {item["id"] for item in first["conversations"]}


def test_text_is_trimmed_at_a_word_to_its_share():
    from sparky.mcp.budget import estimate_tokens, trim

    text = "word " * 1000
    cut, trimmed = trim(text, 100)
    assert trimmed and cut.endswith(" […]") and estimate_tokens(cut) <= 100 and cut.startswith("word word")
    assert trim("short", 100) == ("short", False)
    assert estimate_tokens("列表推导式") == 5 and estimate_tokens("abcd" * 10) == 10


def test_a_result_is_shown_as_its_exchange_with_the_matching_passage_when_cut():
    from sparky.mcp.tools import _exchange_out
    from sparky.search import ContextMessage, SearchResult

    long_answer = "Intro words. " * 400 + "The quokka is called Bramblethorn."
    question = ContextMessage("user", None, 0, "Name my quokka", key="q")
    answer = ContextMessage("assistant", None, 1, long_answer, key="a")
    hit = SearchResult("a", "c1", "Pets", "chatgpt", "assistant", None, 1, long_answer, 0.8,
                       "The quokka is called Bramblethorn.", (), question=question, answer=answer)
    shown = _exchange_out(1, hit, share=50)
    assert (shown.matched, shown.question) == ("answer", "Name my quokka")
    assert shown.answer == "The quokka is called Bramblethorn."  # cut: the passage that matched, not the intro
    assert (shown.citation.conversation, shown.citation.message) == ("c1", "a")


@pytest.mark.parametrize("host, allow_remote, token, expected", [
    ("127.0.0.1", False, None, None),
    ("::1", False, None, None),
    ("localhost", False, TOKEN, TOKEN),
    ("0.0.0.0", True, TOKEN, TOKEN),
    ("192.168.1.5", False, TOKEN, "needs --allow-remote"),
    ("my-host.example", True, None, "needs a bearer token"),
    ("my-host.example", True, "", "needs a bearer token"),
])
def test_who_may_connect(host, allow_remote, token, expected):
    from sparky.mcp.auth import AccessError, check_access

    if expected in (None, TOKEN):
        assert check_access(host, allow_remote, token) == expected
    else:
        with pytest.raises(AccessError, match=expected):
            check_access(host, allow_remote, token)


def test_the_bundled_command_is_registered():
    from click.testing import CliRunner

    from sparky.cli import cli

    result = CliRunner().invoke(cli, ["mcp", "--help"])
    assert result.exit_code == 0 and "--allow-remote" in result.output and "SPARKY_MCP_TOKEN" in result.output
