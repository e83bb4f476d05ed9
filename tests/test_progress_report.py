"""`sparky progress` / check_ingestion_progress.py on progress files left by real, interrupted ingestions."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, read_progress, sparky_subprocess, store_keys
from sparky.cli import cli

pytestmark = pytest.mark.slow
RULE = "=" * 80
SEED_LABELS = [
    RULE, "SPARKY INGESTION PROGRESS REPORT", RULE, "Last updated: ", "", "OVERALL PROGRESS:",
    "Total conversations: ", "Processed conversations: ", "Conversation progress: ", "Remaining conversations: ", "",
    "MESSAGE PROCESSING:", "Total messages found: ", "Messages processed: ", "Message progress: ", "",
    "LAST SESSION:", "Processed: ", "Skipped: ", "Failed: ", RULE,
]
KILLED_AT_COMMIT = 7  # the run checkpoints after 5 batches, so the store is ahead of the file


def ingest_args(export: Path, progress: Path) -> list[str]:
    return ["ingest", str(export), "--batch-size", "8", "--quiet", "--progress-file", str(progress)]


def run_ingest(export: Path, progress: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    process = sparky_subprocess(ingest_args(export, progress), cwd=progress.parent, env=env)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def progress_cli(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["progress", *args], input=input)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, small_generated_export) -> Path:
    """A folder with the export, and the progress file and store of a run SIGKILLed mid-way."""
    folder = tmp_path_factory.mktemp("killed")
    shutil.copytree(small_generated_export, folder / "chat-history")
    result = run_ingest(folder / "chat-history", folder / "progress.json",
                        env={"SPARKY_CRASH_AT": f"after_commit:{KILLED_AT_COMMIT}"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    return folder


@pytest.fixture
def killed(tmp_path, killed_run) -> Path:
    """A private copy of the killed run, free to change."""
    folder = tmp_path / "run"
    shutil.copytree(killed_run, folder)
    return folder


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, small_generated_export) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    result = run_ingest(small_generated_export, folder / "progress.json")
    assert result.returncode == 0, result.stderr
    return folder


def test_text_report_keeps_the_seed_layout_and_says_what_the_file_says(killed):
    progress = read_progress(killed / "progress.json")
    result = progress_cli("--progress-file", str(killed / "progress.json"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(line.startswith(label) for line, label in zip(lines, SEED_LABELS)), result.output
    stats = progress["stats"]
    total, done = stats["total_messages"], len(progress["processed_messages"])
    assert 0 < done < total
    conversations_done = len(progress["processed_conversations"])
    for expected in [
        f"Total conversations: {stats['total_conversations']:,}",
        f"Processed conversations: {conversations_done:,}",
        f"Conversation progress: {100 * conversations_done / stats['total_conversations']:.1f}%",
        f"Remaining conversations: {stats['total_conversations'] - conversations_done:,}",
        f"Total messages found: {total:,}",
        f"Messages processed: {done:,}",
        f"Message progress: {100 * done / total:.1f}%",
        f"Processed: {stats['current_session_processed']:,}",
        f"Skipped: {stats['current_session_skipped']:,}",
        f"Failed: {stats['current_session_failed']:,}",
        f"Export: {progress['export']['path']}",
        f"Store: {progress['store']}",
        f"Embedder: {progress['embedder']['model']} (384 dimensions)",
        "Sessions so far: 1",
        f"Resume with: sparky ingest {progress['export']['path']} --progress-file {killed / 'progress.json'}",
    ]:
        assert expected in lines, (expected, result.output)
    assert "running" not in result.output, "a killed ingester's stale lock file must not count as running"


def test_json_report_holds_the_same_facts(killed):
    progress = read_progress(killed / "progress.json")
    result = progress_cli("--json", "--progress-file", str(killed / "progress.json"))
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["exists"] is True
    assert facts["messages"]["processed"] == len(progress["processed_messages"])
    assert facts["messages"]["total"] == progress["stats"]["total_messages"]
    assert facts["conversations"]["processed"] == len(progress["processed_conversations"])
    assert facts["last_session"] == {"processed": progress["stats"]["current_session_processed"],
                                     "skipped": progress["stats"]["current_session_skipped"],
                                     "failed": progress["stats"]["current_session_failed"]}
    assert facts["sessions"] == 1 and facts["running_pid"] is None and facts["complete"] is False
    assert facts["embedder"] == progress["embedder"]
    assert facts["estimate"] is None


def test_estimate_time_uses_the_recorded_session(killed):
    result = progress_cli("--estimate-time", "--progress-file", str(killed / "progress.json"))
    assert result.exit_code == 0, result.output
    assert "TIME ESTIMATE:" in result.output
    assert "Based on: 1 session:" in result.output
    assert "Total estimated time: " in result.output and "Fits in one session (under 1 hour)." in result.output
    assert "1-2 hours each" not in result.output, "a job of minutes is not split into sessions of hours"
    assert "calibration" not in result.output and "Tokens" not in result.output


def test_failed_messages_are_grouped_by_their_last_error_with_how_to_retry(tmp_path, sample_export,
                                                                          faulty_embedders):
    progress = tmp_path / "progress.json"
    faulty_embedders("permanent=docker")
    CliRunner().invoke(cli, ["ingest", str(sample_export), "--quiet", "--progress-file", str(progress)])
    failed = read_progress(progress)["failed_messages"]
    assert len(failed) > 1
    result = progress_cli("--progress-file", str(progress))
    assert f"FAILED MESSAGES: {len(failed)}" in result.output
    assert f"  {len(failed)} x PermanentEmbedError: " in result.output
    assert f"The next run retries them: sparky ingest {sample_export} --progress-file {progress}" in result.output
    facts = json.loads(progress_cli("--json", "--progress-file", str(progress)).stdout)
    assert facts["failed_messages"] == len(failed) and not facts["complete"]
    assert [group["count"] for group in facts["failed_errors"]] == [len(failed)]
    assert set(facts["failed_errors"][0]["keys"]) <= set(failed)


def test_report_while_an_ingestion_is_running_does_not_wait_for_it(tmp_path, small_generated_export):
    progress = tmp_path / "progress.json"
    ingester = sparky_subprocess(ingest_args(small_generated_export, progress), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (progress.exists() and read_progress(progress)["processed_messages"]):
            assert time.monotonic() < deadline and ingester.poll() is None, "the ingestion never checkpointed"
            time.sleep(0.05)
        report = subprocess.run(
            [sys.executable, str(ROOT / "check_ingestion_progress.py"), "--progress-file", str(progress)],
            capture_output=True, text=True, timeout=30,
        )
    finally:
        ingester.send_signal(signal.SIGINT)
        ingester.communicate(timeout=60)
    assert report.returncode == 0, report.stderr
    assert f"An ingestion is running (pid {ingester.pid})" in report.stdout
    assert ingester.returncode == 130


def test_rebuild_from_the_store_equals_what_a_clean_run_writes(tmp_path, clean_run, small_generated_export):
    shutil.copy(clean_run / "sparky_memory.db", tmp_path / "sparky_memory.db")
    (tmp_path / "progress.json").write_text("{ damaged")
    result = progress_cli("--rebuild", "--export", str(small_generated_export),
                          "--progress-file", str(tmp_path / "progress.json"))
    assert result.exit_code == 0, result.output
    assert "Rebuilt" in result.output and "session history is lost" in result.output
    assert "INGESTION COMPLETE!" in result.output
    rebuilt, clean = read_progress(tmp_path / "progress.json"), read_progress(clean_run / "progress.json")
    for field in ("processed_messages", "processed_conversations", "failed_messages", "export", "embedder"):
        assert rebuilt[field] == clean[field], field
    for field in ("total_conversations", "total_messages", "processed_messages"):
        assert rebuilt["stats"][field] == clean["stats"][field], field


def test_rebuild_after_a_kill_catches_up_with_the_store(killed):
    before = read_progress(killed / "progress.json")
    result = progress_cli("--rebuild", "--progress-file", str(killed / "progress.json"))
    assert result.exit_code == 0, result.output
    assert "Rebuilt" in result.output and "lost" not in result.output
    after = read_progress(killed / "progress.json")
    stored = store_keys(killed / "sparky_memory.db")
    assert len(before["processed_messages"]) < len(stored)
    assert sorted(after["processed_messages"]) == stored
    assert after["sessions"] == before["sessions"], "the session history is kept"


def test_lost_progress_file_is_rebuilt_without_re_embedding(killed):
    (killed / "progress.json").unlink()
    missing = progress_cli("--progress-file", str(killed / "progress.json"))
    assert missing.exit_code == 0, missing.output  # a report, from the store
    stored = len(store_keys(killed / "sparky_memory.db"))
    assert "No progress file" in missing.output and f"{stored:,} messages in " in missing.output
    assert "--rebuild" in missing.output
    result = progress_cli("--rebuild", "--export", str(killed / "chat-history"),
                          "--progress-file", str(killed / "progress.json"))
    assert result.exit_code == 0, result.output
    assert sorted(read_progress(killed / "progress.json")["processed_messages"]) == store_keys(
        killed / "sparky_memory.db")


def test_copied_progress_file_and_store_work_with_the_export_elsewhere(tmp_path, small_generated_export, clean_run):
    """The seed's "run this on a different machine": the export is found by content, not by path."""
    first = tmp_path / "first-machine"
    shutil.copytree(small_generated_export, first / "chat-history")
    killed = run_ingest(first / "chat-history", first / "progress.json",
                        env={"SPARKY_CRASH_AT": f"after_commit:{KILLED_AT_COMMIT}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    other = tmp_path / "other-machine"
    (other / "state").mkdir(parents=True)
    shutil.copy(first / "progress.json", other / "state" / "copied_progress.json")
    # killed, not stopped: its latest checkpoints are in the journal beside the file, copied with it
    shutil.copy(first / "progress.json.journal", other / "state" / "copied_progress.json.journal")
    shutil.copy(first / "sparky_memory.db", other / "state" / "sparky_memory.db")
    shutil.copytree(first / "chat-history", other / "downloads" / "my-export")
    shutil.rmtree(first)  # the export path the progress file records is gone
    copied = other / "state" / "copied_progress.json"

    report = progress_cli("--estimate-time", "--progress-file", str(copied))
    assert report.exit_code == 0, report.output
    assert "Total estimated time: " in report.output
    rebuilt = progress_cli("--rebuild", "--export", str(other / "downloads" / "my-export"), "--progress-file", str(copied))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert sorted(read_progress(copied)["processed_messages"]) == store_keys(other / "state" / "sparky_memory.db")

    resumed = run_ingest(other / "downloads" / "my-export", copied)
    assert resumed.returncode == 0, resumed.stderr
    assert "INGESTION COMPLETE!" in resumed.stdout
    assert store_keys(other / "state" / "sparky_memory.db") == store_keys(clean_run / "sparky_memory.db")
    final = progress_cli("--json", "--progress-file", str(copied))
    facts = json.loads(final.stdout)
    assert facts["complete"] and facts["sessions"] == 2
    assert facts["export"]["path"] == str(other / "downloads" / "my-export")


def test_another_export_is_refused_by_fingerprint(tmp_path, killed, sample_export):
    result = progress_cli("--rebuild", "--export", str(sample_export), "--progress-file", str(killed / "progress.json"))
    assert result.exit_code == 2
    assert "not the export" in result.output and "Traceback" not in result.output


def test_reset_asks_first_and_then_does_what_ingest_reset_does(killed):
    args = ["--reset", "--progress-file", str(killed / "progress.json")]
    cancelled = progress_cli(*args, input="n\n")
    assert cancelled.exit_code == 0 and "Reset cancelled; nothing was deleted." in cancelled.stdout
    assert store_keys(killed / "sparky_memory.db") and (killed / "progress.json").exists()
    result = progress_cli(*args, "--yes")
    assert result.exit_code == 0, result.output
    assert store_keys(killed / "sparky_memory.db") == [], "messages stored after the last checkpoint go too"
    assert not (killed / "progress.json").exists()


BAD_FILES = {
    "damaged": b'{"processed_messages": ["a", ',
    "not-json": b"\x00\x01 binary",
    "foreign": json.dumps({"name": "some other tool's settings"}).encode(),
    "a-list": b"[1, 2, 3]",
    "wrong-types": json.dumps({"processed_messages": [], "failed_messages": ["k"]}).encode(),
    "stats-not-numbers": json.dumps({"processed_messages": [], "stats": {"total_messages": "many"}}).encode(),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_progress_file_is_one_line_error_exit_2(tmp_path, case):
    bad = tmp_path / f"{case}.json"
    bad.write_bytes(BAD_FILES[case])
    result = subprocess.run([sys.executable, str(ROOT / "check_ingestion_progress.py"), "--progress-file", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(bad) in lines[0], result.stderr
    assert "--rebuild" in lines[0]


def test_missing_progress_file_says_how_to_start(tmp_path):
    result = progress_cli("--progress-file", str(tmp_path / "none.json"))
    assert result.exit_code == 1
    assert "No progress file" in result.output and "sparky ingest" in result.output
    facts = json.loads(progress_cli("--json", "--progress-file", str(tmp_path / "none.json")).stdout)
    assert facts["exists"] is False
