"""The wordllama static embedder (real packaged weights): the official vectors, its tokens, and the CLI with it."""

from __future__ import annotations

import base64
import importlib.util
import json
import platform
import random
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import linear_mapping, read_progress
from sparky.pipeline.chunking import chunk_messages
from sparky.cli import cli
from sparky.embedders import get_embedder
from sparky.embedders.static import WordLlama

# wordllama ships wheels for Linux x86_64 only (make install skips it elsewhere); where it has one, it must be here.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("wordllama") is None and not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="no wordllama wheel for this platform",
)
GOLDEN = Path(__file__).parent / "data" / "wordllama_golden.json"  # written by data/make_wordllama_golden.py


@pytest.fixture(scope="module")
def wordllama():
    return get_embedder("wordllama")


def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def test_vectors_are_the_official_wordllama_vectors(wordllama):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    texts, official = golden["texts"], normalised(np.array(golden["vectors"], dtype=np.float64))
    ours = wordllama.embed(texts)
    for text, mine, theirs in zip(texts, ours, official):
        if text:
            assert float(mine @ theirs) > 0.9999, text
        else:  # no tokens: wordllama's zero vector
            assert not mine.any() and not theirs.any()
    assert np.abs(ours - official).max() < 1e-5
    assert max(wordllama.count_tokens(texts)) > 600  # the long text is averaged whole, not truncated


def test_vectors_are_256_dimensional_normalised_float32_whatever_the_batching(wordllama):
    texts = ["hi", "How do I reverse a list in Python?", "你好，世界", "🎉🎉", "x " * 3000, "\n\n"]
    vectors = wordllama.embed(texts)
    assert vectors.shape == (6, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert wordllama.embed([]).shape == (0, 256)
    one_by_one = np.vstack([wordllama.embed([text]) for text in texts])
    tiny_steps = WordLlama(token_budget=7).embed(texts)
    assert np.allclose(vectors, one_by_one, atol=1e-6) and np.allclose(vectors, tiny_steps, atol=1e-6)


TEXTS = ["Unbelievably, the naïve café\n\nreopened 你好 🎉🎉 don't step_1()   x", "  leading\tand trailing \n",
         "def f(x):\n    return x  # ½", "", "Привет, мир!"]


def test_spans_cover_exactly_the_visible_text(wordllama):
    for text, tokens in zip(TEXTS, wordllama.tokenize(TEXTS)):
        assert len(tokens.spans) == len(tokens.word_starts) == wordllama.count_tokens([text])[0]
        assert all(a <= c and b <= d for (a, b), (c, d) in zip(tokens.spans, tokens.spans[1:]))
        covered = set().union(*(range(start, end) for start, end in tokens.spans))
        assert covered == {i for i, char in enumerate(text) if not char.isspace()}
        assert all(text[start:end] == text[start:end].strip() for start, end in tokens.spans)


def words(text: str, tokens) -> list[str]:
    """The text of each word: from a word start's span to the end of the last span before the next."""
    bounds: list[list[int]] = []
    for (start, end), begins in zip(tokens.spans, tokens.word_starts):
        if begins:
            bounds.append([start, end])
        else:
            bounds[-1][1] = max(bounds[-1][1], end)
    return [text[start:end] for start, end in bounds]


def test_word_starts_split_like_bert_words(wordllama):
    text = TEXTS[0]
    assert words(text, wordllama.tokenize([text])[0]) == [
        "Unbelievably", ",", "the", "naïve", "café", "reopened", "你", "好", "🎉", "🎉", "don", "'", "t",
        "step", "_", "1", "()", "x"]
    blob = "QUJD" * 500  # base64: one 'word' of hundreds of tokens is cut into words of 16
    starts = wordllama.tokenize([blob])[0].word_starts
    assert 0 < len(starts) / sum(starts) <= 16


def test_chunks_of_a_long_message_are_slices_that_cover_it(wordllama):
    paragraph = ("Step {n}: rebuild the index after changing the embedding model, then compare recall on the "
                 "labelled queries. If chunk {n} still fails, log its key and retry with a smaller batch.")
    blob = base64.b64encode(random.Random(1).randbytes(2400)).decode()  # words of 16 tokens (see above)
    text = "\n\n".join(paragraph.format(n=n) for n in range(120)) + "\n\n" + blob
    chunks = chunk_messages([("long", text), ("short", "hello")], wordllama)
    long = [c for c in chunks if c.message_key == "long"]
    assert len(long) >= 6 and [c.index for c in long] == list(range(len(long)))
    assert max(wordllama.count_tokens([c.text for c in long])) <= wordllama.max_tokens + 1  # + a '▁'
    start = position = 0
    for chunk in long:
        start = text.index(chunk.text, start + 1 if chunk.index else 0)
        assert start <= position  # no gap: consecutive chunks overlap
        position = start + len(chunk.text)
    assert long[0].text.startswith("Step 0:") and position == len(text)
    assert all(c.text.endswith(".") for c in long[:3])  # cut at a paragraph or sentence end


def ingest(tmp_path: Path, export: Path, *extra: str):
    return CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(tmp_path / "progress.json"),
                                    "--quiet", *extra])


def search(db: Path, query: str, *extra: str):
    return CliRunner().invoke(cli, ["search", query, "--db", str(db), "--format", "json", *extra])


def test_ingest_and_search_the_sample_with_wordllama(tmp_path, sample_export):
    result = ingest(tmp_path, sample_export, "--embedder", "wordllama")
    assert result.exit_code == 0, result.output
    db = tmp_path / "sparky_memory.db"
    assert read_progress(tmp_path / "progress.json")["embedder"] == {"model": "wordllama-l2-supercat-256",
                                                                     "dimensions": 256}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM vectors WHERE length(vector) != 256 * 4").fetchone() == (0,)
    found = search(db, "eggs baked in tomato sauce for four people", "--embedder", "wordllama", "--mode", "vector")
    assert found.exit_code == 0, found.output
    assert "shakshuka" in json.loads(found.output)["results"][0]["text"].lower()


def test_a_minilm_store_refuses_wordllama_with_one_clear_line(tmp_path, sample_export):
    mapping, leaf = linear_mapping((
        {"id": "q", "author": {"role": "user"}, "create_time": 1.7e9, "recipient": "all",
         "content": {"content_type": "text", "parts": ["How do I list docker containers?"]}},
        {"id": "a", "author": {"role": "assistant"}, "create_time": 1.7e9 + 5, "recipient": "all",
         "content": {"content_type": "text", "parts": ["Run docker ps, or docker ps -a for stopped ones too."]}},
    ))
    export = tmp_path / "tiny"
    export.mkdir()
    (export / "conversations.json").write_text(json.dumps([{
        "id": "c1", "title": "Docker", "create_time": 1.7e9, "update_time": 1.7e9, "mapping": mapping,
        "current_node": leaf}]), encoding="utf-8")
    assert ingest(tmp_path, export).exit_code == 0  # the default embedder: MiniLM
    db = tmp_path / "sparky_memory.db"

    refused = [CliRunner().invoke(cli, ["ingest", str(sample_export), "--db", str(db), "--embedder", "wordllama",
                                        "--progress-file", str(tmp_path / "other.json")]),
               search(db, "docker", "--embedder", "wordllama")]
    for result in refused:
        assert result.exit_code == 2
        assert "built with embedding model all-MiniLM-L6-v2-q8 (384 dimensions), not wordllama-l2-supercat-256 (256)" \
            in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_without_embedder_the_store_model_is_used_to_resume_and_search(tmp_path, sample_export):
    """A store built with a non-default model keeps working with the plain commands."""
    progress = tmp_path / "progress.json"
    first = ingest(tmp_path, sample_export, "--embedder", "wordllama")
    assert first.exit_code == 0, first.output
    again = ingest(tmp_path, sample_export)  # no --embedder: the store says wordllama
    assert again.exit_code == 0, again.output
    assert read_progress(progress)["embedder"]["model"] == "wordllama-l2-supercat-256"
    found = search(tmp_path / "sparky_memory.db", "eggs baked in tomato sauce for four people", "--mode", "vector")
    assert found.exit_code == 0, found.output  # MiniLM would be refused: 384 dimensions, not 256
    assert "shakshuka" in json.loads(found.output)["results"][0]["text"].lower()
