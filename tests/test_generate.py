"""sample/generate.py: exact meaningful-message counts, real export structure, determinism, shards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, generate_export
from sparky.readers import ExportReader
from sparky.pipeline.select import Selector

GENERATE = ROOT / "sample" / "generate.py"


def meaningful(export) -> tuple[int, int, ExportReader, Selector]:
    reader, selector = ExportReader(export), Selector()
    conversations = messages = 0
    for conversation in reader.conversations():
        conversations += 1
        messages += len(selector.select(conversation))
    return conversations, messages, reader, selector


def test_the_seed_scale_export_has_exactly_the_requested_counts(tmp_path):
    export = generate_export(tmp_path / "out", 544, 13719)
    conversations, messages, reader, selector = meaningful(export)
    assert (conversations, messages) == (544, 13719)
    assert reader.skipped == [] and not selector.dropped
    for kind in ("system", "thoughts", "reasoning_recap", "tool_call", "execution_output"):
        assert reader.content_counts[kind] > 0


@pytest.mark.parametrize("conversations, messages", [(1, 1), (3, 3), (7, 50), (40, 400)])
def test_small_exports_have_exact_counts(tmp_path, conversations, messages):
    assert meaningful(generate_export(tmp_path, conversations, messages))[:2] == (conversations, messages)


def test_structure_is_a_real_export_with_branches(tmp_path):
    export = generate_export(tmp_path, 60, 900)
    data = json.loads((export / "conversations.json").read_text(encoding="utf-8"))
    assert len(data) == 60
    branching = 0
    for conversation in data:
        mapping = conversation["mapping"]
        assert mapping["client-created-root"]["parent"] is None
        assert conversation["current_node"] in mapping and conversation["id"] == conversation["conversation_id"]
        for node_id, node in mapping.items():
            assert all(mapping[child]["parent"] == node_id for child in node["children"])
        branching += any(len(node["children"]) > 1 for node in mapping.values())
    assert branching > 0


def test_deterministic_for_a_seed(tmp_path):
    first = (generate_export(tmp_path / "a", 20, 200, seed=5) / "conversations.json").read_bytes()
    again = (generate_export(tmp_path / "b", 20, 200, seed=5) / "conversations.json").read_bytes()
    other = (generate_export(tmp_path / "c", 20, 200, seed=6) / "conversations.json").read_bytes()
    assert first == again != other


def test_shards_split_the_same_export(tmp_path):
    out = tmp_path / "sharded"
    subprocess.run([sys.executable, str(GENERATE), "--conversations", "25", "--messages", "300", "--out", str(out),
                    "--seed", "7", "--shards", "4"], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == [f"conversations-00{i}.json" for i in range(4)]
    single = generate_export(tmp_path / "single", 25, 300, seed=7)
    sharded_ids = [c.id for c in ExportReader(out).conversations()]
    assert sharded_ids == [c.id for c in ExportReader(single).conversations()]
    assert meaningful(out)[:2] == (25, 300)


@pytest.mark.parametrize("args", [
    ["--conversations", "5", "--messages", "4"],
    ["--conversations", "0", "--messages", "4"],
    ["--conversations", "2", "--messages", "4", "--shards", "0"],
])
def test_impossible_requests_are_refused(tmp_path, args):
    result = subprocess.run([sys.executable, str(GENERATE), *args, "--out", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "error" in result.stderr
