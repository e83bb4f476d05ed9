"""A run refused before anything is stored leaves nothing behind; the reader's options reach the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import linear_mapping, store_keys
from sparky.cli import cli


def make_empty_folder(root: Path) -> Path:
    (root / "export").mkdir()
    return root / "export"


def make_html_only(root: Path) -> Path:
    (root / "export").mkdir()
    (root / "export" / "chat.html").write_text("<html><body>my chats</body></html>")
    return root / "export"


def make_not_an_export(root: Path) -> Path:
    path = root / "conversations.json"
    path.write_text(json.dumps([{"name": f"item {i}"} for i in range(12)]))
    return path


def make_empty_array(root: Path) -> Path:
    path = root / "conversations.json"
    path.write_text("[]")
    return path


@pytest.mark.parametrize("make", [make_empty_folder, make_html_only, make_not_an_export, make_empty_array])
def test_a_refused_run_creates_no_store_lock_or_progress_file(tmp_path, make):
    (tmp_path / "in").mkdir()
    export = make(tmp_path / "in")
    work = tmp_path / "work"
    work.mkdir()
    result = CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(work / "p.json")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(export.name) in errors[0] and "Traceback" not in result.output
    assert list(work.iterdir()) == []
    progress = CliRunner().invoke(cli, ["progress", "--progress-file", str(work / "p.json")])
    assert progress.exit_code == 1 and "--rebuild" not in progress.output  # nothing to rebuild from


def chat_message(role: str, text: str) -> dict:
    return {"id": f"{role}-{abs(hash(text))}", "author": {"role": role},
            "content": {"content_type": "text", "parts": [text]}}


def chatgpt_conversation(conversation_id: str, text: str, **extra: object) -> dict:
    mapping, current = linear_mapping((chat_message("user", text), chat_message("assistant", f"About {text}.")))
    return {"id": conversation_id, "title": conversation_id, "mapping": mapping, "current_node": current, **extra}


def test_do_not_remember_conversations_are_left_out_unless_asked_for(tmp_path):
    export = tmp_path / "conversations.json"
    export.write_text(json.dumps([chatgpt_conversation("kept", "a normal question about gardening"),
                                  chatgpt_conversation("private", "something private", is_do_not_remember=True)]))
    first = CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(tmp_path / "a" / "p.json")])
    assert first.exit_code == 0, first.output
    assert len(store_keys(tmp_path / "a" / "sparky_memory.db")) == 2
    assert "do_not_remember 1" in first.output.replace(",", "")
    second = CliRunner().invoke(cli, ["ingest", str(export), "--include-do-not-remember",
                                      "--progress-file", str(tmp_path / "b" / "p.json")])
    assert second.exit_code == 0, second.output
    assert len(store_keys(tmp_path / "b" / "sparky_memory.db")) == 4


def test_format_forces_the_reader(tmp_path):
    export = tmp_path / "conversations.json"
    export.write_text(json.dumps([chatgpt_conversation("c1", "a question about the tides")]))
    result = CliRunner().invoke(cli, ["ingest", str(export), "--format", "claude",
                                      "--progress-file", str(tmp_path / "p.json")])
    assert result.exit_code == 2 and "not a Claude export" in result.output, result.output
    assert not (tmp_path / "sparky_memory.db").exists()
