"""``sparky ingest --embedder openai`` over real HTTP to a local OpenAI-compatible server: what is sent, and when."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from conftest import store_keys  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from sparky.cli import cli  # noqa: E402

KEY = "sk-test-0123456789abcdefSECRET"


def ingest(tmp_path: Path, export: Path, server: FakeOpenAI, *extra: str, input: str | None = None):
    args = ["ingest", str(export), "--embedder", "openai", "--model", "nomic-embed-text", "--base-url", server.url,
            "--api-key-env", "MY_EMBED_KEY", "--progress-file", str(tmp_path / "p.json"), *extra]
    return CliRunner().invoke(cli, args, env={"MY_EMBED_KEY": KEY}, input=input)


def test_the_plan_is_shown_and_nothing_is_sent_without_yes_when_there_is_no_terminal(tmp_path, sample_export):
    with FakeOpenAI(key=KEY) as server:
        result = ingest(tmp_path, sample_export, server)
        assert result.exit_code == 2, result.output
        assert "nothing was sent: pass --yes" in result.output
        assert "This sends 97 texts" in result.output and "$MY_EMBED_KEY" in result.output
        assert server.answered <= 1  # at most the probe of the vector width, which holds no user text
        assert KEY not in result.output
    assert store_keys(tmp_path / "sparky_memory.db") == []


def test_with_yes_the_sample_is_embedded_by_the_server_and_searchable(tmp_path, sample_export):
    with FakeOpenAI(key=KEY) as server:
        result = ingest(tmp_path, sample_export, server, "--yes")
        assert result.exit_code == 0, result.output
        assert "INGESTION COMPLETE!" in result.output and KEY not in result.output
        assert len(store_keys(tmp_path / "sparky_memory.db")) == 97
        search = CliRunner().invoke(cli, ["search", "docker", "--mode", "keyword",
                                          "--db", str(tmp_path / "sparky_memory.db")])
        assert search.exit_code == 0 and "docker" in search.output.lower()
    for file in tmp_path.rglob("*"):
        assert not file.is_file() or KEY.encode() not in file.read_bytes(), file


def test_search_over_an_openai_store_says_where_the_query_goes_and_uses_the_named_key(tmp_path, sample_export):
    with FakeOpenAI(key=KEY) as server:
        assert ingest(tmp_path, sample_export, server, "--yes").exit_code == 0
        before = server.answered
        search = CliRunner().invoke(cli, ["search", "docker permission denied", "--mode", "vector", "--all",
                                          "--api-key-env", "MY_EMBED_KEY", "--db", str(tmp_path / "sparky_memory.db"),
                                          "--format", "json"], env={"MY_EMBED_KEY": KEY})
        assert search.exit_code == 0, search.output
        assert f"Sending the query to {server.url.split('//')[1].split('/')[0]} to embed it with nomic-embed-text" \
            in search.output and KEY not in search.output
        assert server.answered == before + 1  # the query, once
        keyword = CliRunner().invoke(cli, ["search", "docker", "--mode", "keyword",
                                           "--db", str(tmp_path / "sparky_memory.db")])
        assert keyword.exit_code == 0 and "Sending" not in keyword.output and server.answered == before + 1
