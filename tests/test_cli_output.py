"""What the commands print, and where (issue 9, a new user's first runs): results on stdout and progress on
stderr, nothing wrapped off a terminal, a declined reset that is a cancel and not an error, a report from
the store once the progress file is gone, session advice that matches the time estimate, counts in good
English, and an immediate word on Ctrl+C."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from conftest import store_keys
from sparky.cli import cli
from sparky.cli.display import STOPPED_NOW, STOPPING, Display
from sparky.cli.summary import RULE, print_summary
from sparky.pipeline import ingest as pipeline
from sparky.pipeline.estimate import Estimate, plan
from sparky.pipeline.report import estimate_lines
from sparky.readers import ExportReader
from sparky.words import ordinal, plural

CANCELLED = "Reset cancelled; nothing was deleted."


def invoke(*args: str, input: str | None = None):
    """The CLI as ``sparky``, with rich told the screen is 80 columns wide (its default off a terminal)."""
    return CliRunner().invoke(cli, list(args), input=input, env={"COLUMNS": "80"}, prog_name="sparky")


def long_progress_path(folder: Path) -> Path:
    path = folder / ("a-folder-with-a-long-name-" * 6) / "progress.json"
    assert len(str(path)) > 160
    return path


def result_of(interrupted: bool, failed: int = 0, skipped_conversations=()) -> pipeline.IngestResult:
    return pipeline.IngestResult(
        total_conversations=1, total_messages=2, stored_messages=1 if interrupted or failed else 2, processed=1,
        skipped=0, failed=failed, failed_conversations=[], skipped_conversations=list(skipped_conversations),
        dropped={}, interrupted=interrupted,
    )


class PausedIngestion:
    """Stands in for the pipeline: every run pauses half-way, as after a Ctrl+C."""

    def __init__(self, export: Path, *args, **kwargs) -> None:
        self.reader = ExportReader(export)

    def run(self) -> pipeline.IngestResult:
        return result_of(interrupted=True)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, sample_export):
    """The sample ingested once through the CLI, its progress file (and store) under a long path."""
    progress = long_progress_path(tmp_path_factory.mktemp("ingested"))
    result = invoke("ingest", str(sample_export), "--progress-file", str(progress))
    assert result.exit_code == 0, result.output
    return progress, result


@pytest.fixture
def copied(tmp_path, ingested) -> Path:
    """A private copy of the ingested progress file and store; returns the progress file."""
    progress, _ = ingested
    shutil.copytree(progress.parent, tmp_path / "run")
    return tmp_path / "run" / progress.name


def store_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as connection:
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("conversations", "messages", "chunks")}


# --- 1. never wrap what is not a terminal ------------------------------------------------------------

def test_the_resume_command_stays_on_one_line_however_long_and_goes_to_stdout(tmp_path, sample_export,
                                                                              monkeypatch):
    monkeypatch.setattr(pipeline, "Ingestion", PausedIngestion)
    progress = long_progress_path(tmp_path)
    result = invoke("ingest", str(sample_export), "--progress-file", str(progress))
    assert result.exit_code == 130, result.output
    hint = f"Resume with the same command: sparky ingest {sample_export} --progress-file {progress}"
    assert hint in result.output.splitlines(), result.output
    assert hint in result.stdout and "INGESTION PAUSED" in result.stdout and "Resume with" not in result.stderr


def test_a_long_path_in_the_summary_stays_on_one_line(ingested):
    progress, result = ingested
    assert f"You can delete: {progress}" in result.output.splitlines(), result.output


# --- 2. results on stdout, progress and problems on stderr -------------------------------------------

def test_the_summary_goes_to_stdout_and_the_progress_to_stderr(ingested):
    _, result = ingested
    assert result.stdout.startswith(RULE) and "INGESTION COMPLETE!" in result.stdout
    assert "This session: stored " in result.stdout and "You can delete: " in result.stdout
    for progress_line in ("Reading export: ", "Starting: ", "Progress: "):
        assert progress_line in result.stderr and progress_line not in result.stdout
    assert "INGESTION COMPLETE!" not in result.stderr


def test_errors_stay_on_stderr(tmp_path):
    result = invoke("ingest", str(tmp_path / "nowhere"), "--progress-file", str(tmp_path / "p.json"))
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.startswith("Error: ")


def test_the_display_writes_to_stderr_by_default():
    assert Display().console.stderr


# --- 3. a declined reset is a cancel: exit 0, nothing deleted, nothing ingested ---------------------------

@pytest.mark.parametrize("answer", ["n\n", ""], ids=["no", "end-of-input"])
@pytest.mark.parametrize("command", ["reset", "progress --reset", "ingest --reset"])
def test_a_declined_reset_deletes_nothing_and_exits_0(copied, sample_export, command, answer):
    db = copied.parent / "sparky_memory.db"
    before = (copied.read_bytes(), store_keys(db))
    words = command.split()
    args = [*words[:1], *([str(sample_export)] if words[0] != "progress" else []), *words[1:]]
    result = invoke(*args, "--progress-file", str(copied), input=answer)
    assert result.exit_code == 0, result.output
    assert CANCELLED in result.stdout.splitlines()
    assert "Error" not in result.output and "Aborted" not in result.output
    assert "Reading export" not in result.output, "a cancelled ingest --reset must not go on to ingest"
    assert (copied.read_bytes(), store_keys(db)) == before


# --- 4. without a progress file, a report from the store ----------------------------------------------

def test_a_finished_ingestion_without_its_progress_file_is_reported_from_the_store(copied):
    counts = store_counts(copied.parent / "sparky_memory.db")
    copied.unlink()  # what the completion message says may be done
    result = invoke("progress", "--progress-file", str(copied))
    assert result.exit_code == 0, result.output
    assert "no ingestion has started" not in result.stdout
    assert (f"holds {counts['conversations']} conversations, {counts['messages']} messages in "
            f"{counts['chunks']} chunks.") in result.stdout
    assert "Embedder: all-MiniLM-L6-v2" in result.stdout
    assert f"sparky progress --rebuild --export EXPORT --progress-file {copied}" in result.stdout


def test_the_report_from_the_store_as_json(copied):
    counts = store_counts(copied.parent / "sparky_memory.db")
    copied.unlink()
    result = invoke("progress", "--json", "--progress-file", str(copied))
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["exists"] is False and facts["store"] == str(copied.parent / "sparky_memory.db")
    assert {key: facts["store_holds"][key] for key in counts} == counts
    assert facts["store_holds"]["model"].startswith("all-MiniLM-L6-v2") and facts["store_holds"]["dimensions"] == 384
    assert "--rebuild" in facts["rebuild"]


def test_neither_progress_file_nor_store_still_exits_1_and_creates_nothing(tmp_path):
    result = invoke("progress", "--progress-file", str(tmp_path / "p.json"))
    assert result.exit_code == 1
    assert "no ingestion has started with it yet" in result.stdout and "Start one with: sparky ingest" in result.stdout
    assert list(tmp_path.iterdir()) == []


# --- 5. session advice that matches the estimate ------------------------------------------------------

def estimate_between(remaining: int, minutes_low: float, minutes_high: float) -> Estimate:
    estimate = Estimate(remaining, "sessions", 1, 100, 10.0)
    return plan(estimate, remaining / (minutes_high * 60), remaining / (minutes_low * 60))


def test_a_job_of_minutes_fits_in_one_session():
    lines = estimate_lines(estimate_between(10_000, 13, 18))
    assert "Total estimated time: 13m - 18m" in lines
    assert "Fits in one session (under 1 hour)." in lines
    assert not any("1-2 hours each" in line for line in lines), lines


def test_a_job_of_hours_is_split_into_sessions_of_one_to_two_hours():
    lines = estimate_lines(estimate_between(36_000, 150, 300))
    assert "Total estimated time: 2h 30m - 5h 00m" in lines
    assert "Can be run in sessions: 1-2 hours each (2-5 sessions)" in lines


# --- 6. cosmetics --------------------------------------------------------------------------------------

def test_the_report_has_no_stray_leading_spaces(ingested):
    progress, _ = ingested
    lines = invoke("progress", "--progress-file", str(progress)).stdout.splitlines()
    assert "Skipped: 0" in lines and f"You can delete: {progress}" in lines
    assert not [line for line in lines if line.startswith(" ")], lines


def test_counts_are_pluralised():
    assert [plural(n, "conversation") for n in (0, 1, 2, 1204)] == [
        "0 conversations", "1 conversation", "2 conversations", "1,204 conversations"]
    assert plural(1, "FAILED MESSAGE") == "1 FAILED MESSAGE" and plural(3, "FAILED MESSAGE") == "3 FAILED MESSAGES"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111, 1000)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th", "1,000th"]
    assert Estimate(5, "sessions", 1, 1, 30.0).basis_text() == "1 session: 1 message in 30s of work"


def test_the_display_says_one_conversation_not_one_conversations():
    out = io.StringIO()
    display = Display(Console(file=out, width=200))
    display.start(total_conversations=1, done_conversations=0, total_messages=1, done_messages=0)
    display.conversation_completed()
    display.batch_stored(stored=0, failed=1)
    display.finish()
    text = out.getvalue()
    assert "Starting: 1 meaningful message in 1 conversation\n" in text
    assert "Progress: 1/1 conversation (Session: 1/1)" in text
    assert "1 message failed (retried by the next run)" in text


def summary_lines(result: pipeline.IngestResult, files: list[str]) -> list[str]:
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result, Path("p.json"), files)
    return out.getvalue().splitlines()


def test_the_summary_pluralises_and_says_where_a_skipped_item_without_an_id_is():
    skipped = [("#0", "not a ChatGPT conversation (no 'mapping')"), ("c-7", "'mapping' is not an object")]
    lines = summary_lines(result_of(interrupted=False, failed=1, skipped_conversations=skipped),
                          ["chat-history/conversations.json"])
    assert "INGESTION FINISHED WITH 1 FAILED MESSAGE" in lines
    assert ("Skipped malformed conversation #0 (the 1st item of chat-history/conversations.json): "
            "not a ChatGPT conversation (no 'mapping')") in lines
    assert "Skipped malformed conversation c-7: 'mapping' is not an object" in lines
    shards = summary_lines(result_of(interrupted=False, skipped_conversations=[("#11", "odd")]),
                           ["conversations-000.json", "conversations-001.json"])
    assert "Skipped malformed conversation #11 (the 12th item of the export, counted across its 2 files): odd" in shards


def test_the_summary_of_a_complete_run_has_no_stray_leading_space():
    lines = summary_lines(result_of(interrupted=False), ["conversations.json"])
    assert "You can delete: p.json" in lines


# --- 7. Ctrl+C: an immediate word, the bar stopped first -----------------------------------------------

def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_the_first_stop_request_stops_the_bar_and_says_so_at_once():
    console, out = terminal()
    display = Display(console)
    threads = threading.active_count()
    display.start(total_conversations=2, done_conversations=0, total_messages=10, done_messages=0)
    assert threading.active_count() == threads, "no refresh thread, so no other thread holds the bar's locks"
    display.batch_stored(stored=4, failed=0)
    display.stopping(immediate=False)
    text = out.getvalue()
    assert "4/10" in text and text.endswith(f"{STOPPING}\n")
    assert STOPPING == "Stopping after the current batch… (Ctrl+C again to stop now)"
    display.batch_stored(stored=4, failed=0)
    display.conversation_completed()
    display.finish()
    assert out.getvalue() == text, "the bar is not drawn again once a stop was asked for"
    display.stopping(immediate=True)
    assert out.getvalue()[len(text):] == f"\n{STOPPED_NOW}\n", "on a line of its own, after the ^C echo"
    assert STOPPED_NOW == ("Stopped now. Nothing is half-written: every stored message is complete. "
                           "Resume with the same command.")


def test_the_stop_message_shows_even_when_quiet_on_a_line_of_its_own():
    console, out = terminal()
    Display(console, quiet=True).stopping(immediate=False)
    assert out.getvalue() == f"\n{STOPPING}\n", "the line starts after the terminal's ^C echo"
    plain = io.StringIO()
    Display(Console(file=plain), quiet=True).stopping(immediate=False)
    assert plain.getvalue() == f"{STOPPING}\n"


STRESS = """
import io, random, signal
from rich.console import Console
from sparky.cli.display import STOPPING, Display

for attempt in range(40):
    out = io.StringIO()
    display = Display(Console(file=out, force_terminal=True, width=120))
    asked = []
    signal.signal(signal.SIGALRM, lambda *_: (asked.append(1), display.stopping(immediate=False)))
    display.start(total_conversations=10, done_conversations=0, total_messages=10**9, done_messages=0)
    signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0005, 0.02))
    while not asked:
        display.batch_stored(stored=1, failed=0)
        display.conversation_completed()
    display.finish()
    assert out.getvalue().count(STOPPING) == 1, out.getvalue()[-300:]
print("ok")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGALRM")
def test_stopping_from_a_signal_handler_in_the_middle_of_a_redraw_never_hangs():
    """The handler runs wherever the main thread happens to be, inside rich's locks too."""
    done = subprocess.run([sys.executable, "-c", STRESS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
