"""End-to-end ingestion through the real CLI, the real local model and a real SQLite file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import read_progress, store_health, store_keys
from sparky.pipeline.chunking import chunk_messages
from sparky.cli import cli
from sparky.embedders import get_embedder
from sparky.locking import FileLock
from sparky.readers import ExportReader
from sparky.pipeline.select import Selector


def ingest(tmp_path: Path, export: Path, *extra: str, env: dict | None = None):
    runner = CliRunner()
    return runner.invoke(
        cli, ["ingest", str(export), "--progress-file", str(tmp_path / "progress.json"), *extra],
        env=env, catch_exceptions=False,
    )


def expected_messages(export: Path) -> list[tuple[str, str]]:
    """(key, text) of every meaningful message, computed straight from the reader and the rules."""
    selector = Selector()
    return [
        (message.key(conversation.source), message.text)
        for conversation in ExportReader(export).conversations()
        for message in selector.select(conversation)
    ]


def test_sample_end_to_end_stores_every_meaningful_message_once(tmp_path, sample_export):
    result = ingest(tmp_path, sample_export)
    assert result.exit_code == 0, result.output
    assert "INGESTION COMPLETE!" in result.output

    expected = expected_messages(sample_export)
    db = tmp_path / "sparky_memory.db"
    assert store_keys(db) == sorted(key for key, _ in expected)
    health = store_health(db)
    expected_chunks = len(chunk_messages(expected, get_embedder("minilm")))
    assert health == {"fts_consistent": True, "integrity": "ok", "messages_without_chunks": 0,
                      "orphan_chunks": 0, "chunks": expected_chunks, "bad_vectors": 0}
    assert expected_chunks > len(expected), "the sample's long answer must need several chunks"

    progress = read_progress(tmp_path / "progress.json")
    assert sorted(progress["processed_messages"]) == sorted(key for key, _ in expected)
    assert progress["stats"]["total_messages"] == len(expected)
    assert progress["stats"]["current_session_processed"] == len(expected)
    assert progress["embedder"]["dimensions"] == 384
    assert progress["sessions"][-1]["ended"] is not None


def test_second_run_is_a_no_op_that_skips_everything(tmp_path, sample_export):
    assert ingest(tmp_path, sample_export).exit_code == 0
    keys_before = store_keys(tmp_path / "sparky_memory.db")
    result = ingest(tmp_path, sample_export)
    assert result.exit_code == 0, result.output
    assert store_keys(tmp_path / "sparky_memory.db") == keys_before
    stats = read_progress(tmp_path / "progress.json")["stats"]
    assert stats["current_session_processed"] == 0
    assert stats["current_session_skipped"] == len(keys_before)
    assert len(read_progress(tmp_path / "progress.json")["sessions"]) == 2


def test_transient_faults_are_retried_and_everything_is_stored(tmp_path, small_generated_export,
                                                               faulty_embedders):
    """30% of embed calls fail (seeded): with retries every message is stored in one run, no failure left,
    and the embedder was called more often than there were batches (without retries the run would fail)."""
    made = faulty_embedders("transient=0.3,seed=3")
    result = ingest(tmp_path, small_generated_export, "--batch-size", "32")
    assert result.exit_code == 0, result.output
    progress = read_progress(tmp_path / "progress.json")
    expected = {key for key, _ in expected_messages(small_generated_export)}
    assert set(store_keys(tmp_path / "sparky_memory.db")) == expected
    assert progress["failed_messages"] == {}
    assert made[0].injected > 0  # calls did fail; each was tried again (without retries the run exits 1)


def test_permanent_failure_is_recorded_the_rest_stored_and_retried_next_run(tmp_path, sample_export,
                                                                          faulty_embedders, monkeypatch):
    expected = expected_messages(sample_export)
    poisoned_key, poisoned_text = next((k, t) for k, t in expected if "docker" in t.lower())
    marker = poisoned_text[:20]
    faulty_embedders(f"permanent={marker}")
    result = ingest(tmp_path, sample_export)
    assert result.exit_code == 1, result.output
    assert "FAILED MESSAGE" in result.output
    progress = read_progress(tmp_path / "progress.json")
    failed = set(progress["failed_messages"])
    assert poisoned_key in failed
    stored = set(store_keys(tmp_path / "sparky_memory.db"))
    assert stored == {k for k, _ in expected} - failed
    assert progress["stats"]["current_session_failed"] == len(failed)

    monkeypatch.undo()  # the next run has a healthy embedder
    retry = ingest(tmp_path, sample_export)
    assert retry.exit_code == 0, retry.output
    assert set(store_keys(tmp_path / "sparky_memory.db")) == {k for k, _ in expected}
    assert read_progress(tmp_path / "progress.json")["failed_messages"] == {}


def test_a_second_ingester_on_the_same_progress_file_is_refused(tmp_path, sample_export):
    with FileLock(tmp_path / "progress.json", "progress file"):
        result = CliRunner().invoke(
            cli, ["ingest", str(sample_export), "--progress-file", str(tmp_path / "progress.json")]
        )
    assert result.exit_code == 3
    assert "in use by another ingestion" in result.output
    assert "Traceback" not in result.output


def test_a_second_ingester_on_the_same_store_is_refused(tmp_path, sample_export):
    db = tmp_path / "shared.db"
    with FileLock(db, "memory store"):
        result = CliRunner().invoke(
            cli, ["ingest", str(sample_export), "--progress-file", str(tmp_path / "other.json"), "--db", str(db)]
        )
    assert result.exit_code == 3
    assert "memory store" in result.output


def test_store_built_with_another_model_is_a_clear_error(tmp_path, sample_export):
    from sparky.stores import open_store

    store = open_store(str(tmp_path / "sparky_memory.db"))
    store.ensure_schema("some-other-model", 768)
    store.close()
    result = CliRunner().invoke(cli, ["ingest", str(sample_export), "--progress-file", str(tmp_path / "p.json")])
    assert result.exit_code == 2
    assert "built with embedding model some-other-model" in result.output


BAD_INPUTS = {
    "not-json": b"this is not json at all",
    "truncated": b'[{"id": "a", "mapping": {"r": {"id": "r", "message": null, "parent": null, "children": []}}, ',
    "not-an-export": json.dumps([{"name": "a shopping list", "items": ["milk"]}]).encode(),
    "empty-export": b"[]",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_error_with_exit_code_2(tmp_path, case):
    export = tmp_path / "conversations.json"
    export.write_bytes(BAD_INPUTS[case])
    result = CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(tmp_path / "p.json")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "conversations.json" in lines[0], result.output
    assert "Traceback" not in result.output


def test_missing_path_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "nowhere"), "--progress-file", str(tmp_path / "p.json")])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {tmp_path / 'nowhere'}: no such file or folder"


def test_reset_removes_this_exports_messages_and_progress(tmp_path, sample_export):
    assert ingest(tmp_path, sample_export).exit_code == 0
    declined = CliRunner().invoke(cli, ["reset", str(sample_export), "--progress-file", str(tmp_path / "progress.json")],
                                  input="n\n")
    assert declined.exit_code == 0 and store_keys(tmp_path / "sparky_memory.db")
    result = ingest(tmp_path, sample_export, "--reset", "--yes")
    assert result.exit_code == 0, result.output
    assert "Reset: removed" in result.output
    assert read_progress(tmp_path / "progress.json")["stats"]["current_session_processed"] == len(
        expected_messages(sample_export))


def test_progress_file_of_another_export_follows_the_newer_one_and_the_store_keeps_both(
        tmp_path, sample_export, small_generated_export):
    assert ingest(tmp_path, sample_export).exit_code == 0
    result = ingest(tmp_path, small_generated_export)
    assert result.exit_code == 0, result.output
    assert f"The progress file followed {os.path.abspath(sample_export)} before" in result.output
    progress = read_progress(tmp_path / "progress.json")
    assert [entry["path"] for entry in progress["previous_exports"]] == [os.path.abspath(sample_export)]
    expected = {key for key, _ in expected_messages(sample_export)} | {
        key for key, _ in expected_messages(small_generated_export)}
    assert set(store_keys(tmp_path / "sparky_memory.db")) == expected


def test_missing_folders_for_the_progress_file_and_store_are_created(tmp_path, sample_export):
    progress = tmp_path / "new" / "deeper" / "progress.json"
    db = tmp_path / "elsewhere" / "memory.db"
    result = CliRunner().invoke(cli, ["ingest", str(sample_export), "--progress-file", str(progress),
                                      "--db", str(db), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert progress.exists() and store_keys(db) == sorted(key for key, _ in expected_messages(sample_export))


@pytest.mark.parametrize("blocked", ["progress", "db"])
def test_a_folder_that_cannot_be_created_is_one_clear_line(tmp_path, sample_export, blocked):
    (tmp_path / "a-file").write_text("not a folder")
    progress = tmp_path / ("a-file/progress.json" if blocked == "progress" else "progress.json")
    db = tmp_path / ("a-file/memory.db" if blocked == "db" else "memory.db")
    result = CliRunner().invoke(cli, ["ingest", str(sample_export), "--progress-file", str(progress),
                                      "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot create its folder" in lines[0] and "a-file" in lines[0], result.output
