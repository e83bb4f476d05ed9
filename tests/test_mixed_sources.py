"""The bundled samples: a ChatGPT and a Claude export ingested into one memory, told apart by --source; the
Claude export read as Claude ships it (a zip, read without unpacking) gives the same memory as its folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, store_keys
from sparky.cli import cli

CLAUDE_SAMPLE = ROOT / "sample" / "claude-export"


@pytest.fixture(scope="module")
def mixed_memory(tmp_path_factory, sample_export) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    db = folder / "memory.db"
    for name, export in (("chatgpt", sample_export), ("claude", CLAUDE_SAMPLE)):
        result = CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(folder / f"{name}.json"),
                                          "--db", str(db), "--quiet"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return db


def search(db: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["search", *args, "--db", str(db), "--format", "json", "--all"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["results"]


def test_source_filter_keeps_each_export_apart(mixed_memory):
    claude = search(mixed_memory, "sourdough starter acetone", "--source", "claude", "-k", "5")
    assert claude and {hit["source"] for hit in claude} == {"claude"}
    assert "ethyl acetate" in claude[0]["text"] or "acetone" in claude[0]["text"]
    chatgpt = search(mixed_memory, "terraform state lock", "--source", "chatgpt", "-k", "5")
    assert chatgpt and {hit["source"] for hit in chatgpt} == {"chatgpt"}


def test_claude_attachments_branches_and_left_out_blocks(mixed_memory):
    clause = search(mixed_memory, "arrendatario", "--mode", "keyword", "--source", "claude", "-k", "3")
    assert any("Contrato de alquiler" in hit["text"] for hit in clause)  # the attachment, indexed with its message
    edited = search(mixed_memory, "rent or buy a cello", "--mode", "keyword", "--source", "claude", "-k", "10")
    texts = [hit["text"] for hit in edited]
    assert any("1.80 m" in text for text in texts)
    assert not any(text == "Should I rent or buy a cello?" for text in texts)  # the abandoned branch
    thinking = search(mixed_memory, "hungry starter producing", "--mode", "keyword", "--source", "claude")
    assert not any(hit["text"].startswith("Acetone smell means") for hit in thinking)


def test_the_claude_zip_gives_the_same_memory_as_its_folder(tmp_path, mixed_memory):
    archive = tmp_path / "data-2025-08-04-12-00-00-batch-0000.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in CLAUDE_SAMPLE.iterdir():
            bundle.write(file, file.name)
    folder_db, zip_db = tmp_path / "folder.db", tmp_path / "zip.db"
    for export, db in ((CLAUDE_SAMPLE, folder_db), (archive, zip_db)):
        result = CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(db) + ".json", "--db", str(db),
                                          "--quiet"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert store_keys(zip_db) == store_keys(folder_db) and len(store_keys(folder_db)) == 20  # "Birds" answers a question: kept
