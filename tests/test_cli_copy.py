"""``sparky copy`` between two SQLite files: everything once, nothing embedded, nothing twice."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import store_health, store_keys
from sparky.cli import cli


def test_copy_moves_a_memory_and_a_second_copy_copies_nothing(tmp_path, sample_export):
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    ingest = CliRunner().invoke(cli, ["ingest", str(sample_export), "--quiet", "--db", str(source),
                                      "--progress-file", str(tmp_path / "p.json")])
    assert ingest.exit_code == 0, ingest.output
    first = CliRunner().invoke(cli, ["copy", "--from", str(source), "--to", str(target)])
    assert first.exit_code == 0, first.output
    assert "Copied 97 of 97 messages" in first.output and "Nothing was embedded again" in first.output
    assert store_keys(target) == store_keys(source) and store_health(target)["bad_vectors"] == 0
    second = CliRunner().invoke(cli, ["copy", "--from", str(source), "--to", str(target)])
    assert second.exit_code == 0 and "Copied 0 of 97 messages" in second.output and "97 were there" in second.output
    search = CliRunner().invoke(cli, ["search", "docker permission denied", "--db", str(target), "-k", "1",
                                      "--format", "json"])
    assert search.exit_code == 0 and "docker" in search.output.lower()


def test_copy_from_a_missing_store_is_one_line_and_creates_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["copy", "--from", str(tmp_path / "none.db"), "--to", str(tmp_path / "b.db")])
    assert result.exit_code == 2 and "no memory store here" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "none.db").exists()
