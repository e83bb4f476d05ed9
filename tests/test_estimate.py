"""The time estimate: its arithmetic on recorded sessions, API tokens, and the calibration before any session."""

from __future__ import annotations

import json
import math
import time

import pytest
from click.testing import CliRunner

from sparky.cli import cli
from sparky.embedders import DEFAULT_EMBEDDER, get_embedder
from sparky.pipeline.estimate import (
    CALIBRATION_SAMPLE, estimate_time, format_duration, from_sessions, survey_remaining,
)
from sparky.pipeline.progress import empty_progress
from sparky.readers import ExportReader
from sparky.pipeline.report import estimate_lines
from sparky.pipeline.select import Selector

HISTORY = [
    {"started": "2025-01-14T09:00:00", "ended": "2025-01-14T10:00:00", "processed": 600, "seconds": 60.0},
    {"started": "2025-01-15T09:00:00", "ended": "2025-01-15T09:05:00", "processed": 300, "seconds": 60.0},
    {"started": "2025-01-15T20:00:00", "ended": "2025-01-15T20:00:05", "processed": 0, "seconds": 5.0},
]


def progress_with(total: int, done: int, sessions: list[dict], model: str = "all-MiniLM-L6-v2"):
    progress = empty_progress()
    progress["stats"].update(total_messages=total, processed_messages=done)
    progress["sessions"] = sessions
    progress["embedder"] = {"model": model, "dimensions": 384}
    return progress


def meaningful(export) -> list[tuple[str, str]]:
    selector = Selector()
    return [(m.key(c.source), m.text) for c in ExportReader(export).conversations() for m in selector.select(c)]


def test_range_runs_from_the_slowest_to_the_fastest_session_and_ignores_idle_ones():
    estimate = from_sessions(HISTORY, remaining=36_000)
    assert (estimate.measured_sessions, estimate.measured_messages, estimate.measured_seconds) == (2, 900, 120.0)
    assert (estimate.rate_low, estimate.rate_high) == (5.0, 10.0)  # 300/60 and 600/60; overall 7.5 lies inside
    assert (estimate.seconds_low, estimate.seconds_high) == (3600.0, 7200.0)
    assert (estimate.sessions_low, estimate.sessions_high) == (1, 2)  # 1 h in 2-hour sessions, 2 h in 1-hour ones
    lines = estimate_lines(estimate)
    assert "Total estimated time: 1h 00m - 2h 00m" in lines
    assert "Can be run in sessions: 1-2 hours each (1-2 sessions)" in lines
    assert "Based on: 2 sessions: 900 messages in 2m of work" in lines


def test_a_single_session_still_gives_a_range_of_at_least_15_percent_each_way():
    estimate = from_sessions([{"processed": 1000, "seconds": 100.0}], remaining=360_000)
    assert estimate.rate_low == pytest.approx(8.5) and estimate.rate_high == pytest.approx(11.5)
    assert estimate.seconds_low == pytest.approx(360_000 / 11.5)
    assert estimate.sessions_low == math.ceil(360_000 / 11.5 / 7200) == 5
    assert estimate.sessions_high == math.ceil(360_000 / 8.5 / 3600) == 12


def test_no_measured_session_means_no_estimate_from_history():
    assert from_sessions([], remaining=10) is None
    assert from_sessions([{"processed": 0, "seconds": 30.0}], remaining=10) is None


def test_the_seed_example_544_conversations_13719_messages():
    """A run measured at 0.32-0.48 messages/s leaves the seed's "8-12 hours" for 13,719 messages."""
    estimate = from_sessions([{"processed": 320, "seconds": 1000.0}, {"processed": 480, "seconds": 1000.0}],
                             remaining=13_719)
    assert format_duration(estimate.seconds_low) == "7h 56m" and format_duration(estimate.seconds_high) == "11h 55m"
    assert (estimate.sessions_low, estimate.sessions_high) == (4, 12)


def test_nothing_left_needs_no_export_and_no_model():
    estimate = estimate_time(progress_with(50, 50, HISTORY), open_reader=None)
    assert estimate.remaining_messages == 0 and estimate.seconds_low is None
    assert estimate.note == "Nothing left to ingest."


OPENAI_SMALL = "openai:text-embedding-3-small@https://api.openai.com/v1"
OWN_SERVER = "openai:nomic-embed-text@http://127.0.0.1:11434/v1"


def _left_after_a_third(export, model: str):
    messages = meaningful(export)
    done = {key for key, _ in messages[::3]}
    progress = progress_with(len(messages), len(done), HISTORY, model=model)
    progress["processed_messages"] = sorted(done)
    return progress, [text for key, text in messages if key not in done]


def test_openai_model_counts_the_exact_tokens_still_to_send_and_their_list_price(sample_export):
    from sparky.embedders.openai_tokens import CountingTokenizer

    progress, left = _left_after_a_third(sample_export, OPENAI_SMALL)
    estimate = estimate_time(progress, lambda: ExportReader(sample_export))
    tokens = sum(CountingTokenizer().count(left))
    assert estimate.api_tokens == tokens and estimate.api_tokens_exact
    assert estimate.api_cost == pytest.approx(tokens * 0.02 / 1_000_000)
    assert estimate.basis == "sessions" and estimate.remaining_messages == len(left)
    lines = estimate_lines(estimate)
    assert f"Tokens still to send to the embedding API: {tokens:,}" in lines
    assert any(line.startswith("Cost still to pay at the list price: $") for line in lines)


def test_a_server_of_your_own_gets_an_upper_bound_and_no_price(sample_export):
    from sparky.embedders.openai_tokens import estimated_counts

    progress, left = _left_after_a_third(sample_export, OWN_SERVER)
    estimate = estimate_time(progress, lambda: ExportReader(sample_export))
    assert estimate.api_tokens == sum(estimated_counts(left)) and not estimate.api_tokens_exact
    assert estimate.api_cost is None
    lines = estimate_lines(estimate)
    assert f"Tokens still to send to the embedding API: ~{estimate.api_tokens:,}" in lines
    assert "Cost still to pay at the list price: unknown (no list price for this model and host)" in lines


def test_progress_estimate_time_shows_tokens_and_cost_still_to_pay(sample_export, tmp_path):
    progress, left = _left_after_a_third(sample_export, OPENAI_SMALL)
    progress["export"] = {"path": str(sample_export)}
    progress_file = tmp_path / "progress.json"
    progress_file.write_text(json.dumps(progress))
    result = CliRunner().invoke(cli, ["progress", "--estimate-time", "--export", str(sample_export),
                                      "--progress-file", str(progress_file)])
    assert result.exit_code == 0, result.output
    assert "Tokens still to send to the embedding API: " in result.output
    assert "Cost still to pay at the list price: $" in result.output


def test_api_embedder_is_never_calibrated(sample_export):
    def no_embedder(name):
        raise AssertionError("an API embedder must not be called to calibrate")

    progress = progress_with(10, 0, [], model="text-embedding-3-small")
    estimate = estimate_time(progress, lambda: ExportReader(sample_export), embedder_factory=no_embedder)
    assert estimate.basis == "" and estimate.api_tokens > 0
    assert "first session" in estimate.note


def test_survey_samples_only_messages_not_yet_stored(sample_export):
    messages = meaningful(sample_export)
    done = {key for key, _ in messages[: len(messages) // 2]}
    survey = survey_remaining(ExportReader(sample_export), done, sample_size=8)
    assert survey.messages == len(messages) - len(done)
    assert len(survey.sample) == 8 and not {key for key, _ in survey.sample} & done


OWN_SAMPLE = 24  # messages the test times the model on itself


class TimedEmbedder:
    """Wraps an embedder and records (texts, seconds) of every ``embed`` call, timed around the call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[int, float]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]):
        started = time.perf_counter()
        vectors = self.inner.embed(texts)
        self.calls.append((len(texts), time.perf_counter() - started))
        return vectors


def seconds_to_embed(texts: list[str]) -> float:
    """The test's own timing of the default model embedding ``texts`` (after a warm-up call)."""
    model = get_embedder(DEFAULT_EMBEDDER)
    model.embed(texts[:8])
    started = time.perf_counter()
    model.embed(texts)
    return time.perf_counter() - started


def test_calibration_before_any_session_times_the_local_model(sample_export):
    messages = meaningful(sample_export)
    assert len(messages) > CALIBRATION_SAMPLE, "the sample export is big enough to be sampled"
    made: list[TimedEmbedder] = []
    progress = progress_with(len(messages), 0, [{"processed": 0, "seconds": 2.0}])
    estimate = estimate_time(progress, lambda: ExportReader(sample_export),
                             embedder_factory=lambda name: made.append(TimedEmbedder(get_embedder(name))) or made[-1])
    assert estimate.basis == "calibration" and estimate.remaining_messages == len(messages)
    assert estimate.measured_messages == CALIBRATION_SAMPLE  # the sample size estimate.py says it embeds
    # the seconds are those of a real call of the model, around it: the last call, embedding the whole sample
    # (a chunk or more a message), after a warm-up
    assert len(made) == 1 and len(made[0].calls) >= 2, "a warm-up call, then the timed one"
    timed_texts, timed_seconds = made[0].calls[-1]
    assert timed_texts >= CALIBRATION_SAMPLE
    assert 0 < timed_seconds <= estimate.measured_seconds <= 2 * timed_seconds + 1
    assert estimate.rate_low < estimate.rate_high and estimate.seconds_low < estimate.seconds_high
    # in the ballpark of the test's own timing of the model on some of the messages (whole, not chunked),
    # scaled to all of them, within a factor generous enough for a loaded machine
    own = seconds_to_embed([text for _, text in messages[:OWN_SAMPLE]]) * len(messages) / OWN_SAMPLE
    assert own / 10 <= estimate.seconds_low and estimate.seconds_high <= own * 10, (own, estimate)
    assert any(line.startswith("Based on: calibration on this machine") and f"embedded {CALIBRATION_SAMPLE} " in line
               for line in estimate_lines(estimate)), estimate_lines(estimate)


def test_cli_without_a_progress_file_calibrates_on_the_named_export(tmp_path, sample_export):
    args = ["progress", "--estimate-time", "--export", str(sample_export), "--progress-file", str(tmp_path / "p.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "No progress file" in result.output and "calibration on this machine" in result.output
    facts = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert facts["exists"] is False and facts["estimate"]["basis"] == "calibration"
    assert facts["estimate"]["remaining_messages"] == len(meaningful(sample_export))


def test_format_duration():
    assert [format_duration(s) for s in (0.4, 59, 61, 3599, 3600, 3 * 3600 + 5 * 60)] == [
        "0s", "59s", "1m", "1h 00m", "1h 00m", "3h 05m"]
