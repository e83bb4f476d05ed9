"""minilm-static (all-MiniLM-L6-v2 distilled the model2vec way, real weights): model2vec's own inference over
the same table, minilm's tokens and chunks, the cache, and a progressive ingest with it as the static model."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from model2vec import StaticModel
from rich.console import Console
from tokenizers import Tokenizer

from conftest import SAMPLE
from sparky.cli import cli
from sparky.cli.display import Display
from sparky.embedders import distilled, get_embedder, local, recorded_model
from sparky.embedders.distilled import MiniLMStatic, load_table, table_path
from sparky.pipeline.chunking import chunk_messages
from sparky.pipeline.ingest import StopRequest
from sparky.errors import SparkyError
from sparky.pipeline import progressive as progressive_module
from sparky.pipeline.progressive import ProgressiveIngestion, static_name
from sparky.search import Searcher
from sparky.search.spaces import SpacePlanner
from sparky.stores import Space, open_store
from support.displays import StopAfter
from support.stores import embedded_store

TEXTS = ["How do I reverse a list in Python?", "Héllo WORLD, naïve café", "你好，世界", "🎉 only emoji 🎉", "",
         "x " * 300, "def f(x):\n    return x**2  # [CLS] [SEP] [PAD] [UNK]", "a" * 150 + " word", "\n\n"]
SUBSET = 2000  # tokens distilled by the cache tests: about a second


@pytest.fixture(scope="module")
def static() -> MiniLMStatic:
    return get_embedder("minilm-static")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty SPARKY_CACHE_DIR holding only (a link to) the fp32 graph already built, so that distilling here
    does not build it again."""
    graph = local.fp32_path()
    (tmp_path / graph.name).symlink_to(graph)
    monkeypatch.setenv("SPARKY_CACHE_DIR", str(tmp_path))
    return tmp_path


def model2vec_tokenizer(token_ids: np.ndarray) -> Tokenizer:
    """MiniLM's tokenizer as model2vec's distill leaves it: only ``token_ids`` in the vocabulary, renumbered in
    order, no post-processor, padding or truncation."""
    spec = json.loads((local.model_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {index: token for token, index in spec["model"]["vocab"].items()}
    vocab = {by_id[int(index)]: new for new, index in enumerate(token_ids)}
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [dict(token, id=vocab[token["content"]]) for token in spec["added_tokens"]
                            if token["content"] in vocab]
    spec["post_processor"] = spec["padding"] = spec["truncation"] = None
    return Tokenizer.from_str(json.dumps(spec))


def test_vectors_are_model2vecs_static_model_inference_over_the_same_table(static, full_table, tmp_path):
    embeddings, token_ids = full_table
    assert embeddings.dtype == np.float16 and embeddings.shape == (len(token_ids), 256)
    assert len(token_ids) == 30522 - 994 - 1  # less the [unused*] tokens and [MASK]
    tokenizer = model2vec_tokenizer(token_ids)
    StaticModel(vectors=embeddings, tokenizer=tokenizer, normalize=True).save_pretrained(tmp_path / "m2v")
    saved = StaticModel.from_pretrained(tmp_path / "m2v")  # model2vec's format, read back by model2vec
    ours = static.embed(TEXTS)
    assert ours.shape == (len(TEXTS), 256) and ours.dtype == np.float32
    assert np.abs(ours - saved.encode(TEXTS).astype(np.float32)).max() < 1e-3  # it rounds its means to fp16
    exact = StaticModel(vectors=embeddings.astype(np.float32), tokenizer=tokenizer, normalize=True).encode(TEXTS)
    assert np.abs(ours - exact).max() < 1e-6
    assert not ours[TEXTS.index("")].any()  # no tokens: the zero vector, as model2vec's
    assert np.allclose(np.linalg.norm(np.delete(ours, [TEXTS.index(""), TEXTS.index("\n\n")], axis=0), axis=1), 1,
                       atol=1e-5)


def test_vectors_do_not_depend_on_the_batch(static):
    together = static.embed(TEXTS)
    one_by_one = np.vstack([static.embed([text]) for text in TEXTS])
    assert np.abs(together - one_by_one).max() < 1e-6
    assert static.embed([]).shape == (0, 256)
    assert float(static.embed(["python list reverse"])[0] @ together[0]) > 0.8  # it still means something


def test_tokens_and_chunks_are_minilms(static):
    minilm = get_embedder("minilm")
    assert (static.max_tokens, static.special_tokens) == (minilm.max_tokens, minilm.special_tokens)
    assert static.tokenize(TEXTS) == minilm.tokenize(TEXTS)
    long = "\n\n".join(f"Paragraph {n}: the deployment notes for service {n} say to restart it twice." for n in
                       range(150))
    messages = [("long", long), ("short", "hello"), ("code", TEXTS[6] * 40)]
    assert chunk_messages(messages, static) == chunk_messages(messages, minilm)
    assert len(chunk_messages(messages, static)) > 3


def test_the_cached_table_is_reused_and_a_partial_or_stale_one_distilled_again(empty_cache):
    first = MiniLMStatic(vocabulary=SUBSET)
    path = table_path(SUBSET)
    assert distilled.distilled_tables[-1] == path and path.exists()
    assert sorted(p.name for p in empty_cache.iterdir()) == sorted([path.name, local.fp32_path().name, *(
        p.name for p in empty_cache.glob(".*.sha256"))])  # no temp file left behind
    made = len(distilled.distilled_tables)

    again = MiniLMStatic(vocabulary=SUBSET)
    assert len(distilled.distilled_tables) == made  # read from the cache, not distilled
    assert np.array_equal(again.embed(TEXTS), first.embed(TEXTS))

    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # as a copy cut short would leave it
    assert np.array_equal(MiniLMStatic(vocabulary=SUBSET).embed(TEXTS), first.embed(TEXTS))
    assert len(distilled.distilled_tables) == made + 1 and path.read_bytes() == whole

    from safetensors.numpy import save

    embeddings, token_ids = load_table(SUBSET)
    path.write_bytes(save({"embeddings": embeddings[:-1], "token_ids": token_ids[:-1]}))  # another table's
    assert np.array_equal(MiniLMStatic(vocabulary=SUBSET).embed(TEXTS), first.embed(TEXTS))
    assert len(distilled.distilled_tables) == made + 2 and path.read_bytes() == whole


@pytest.fixture(scope="module")
def full_table() -> tuple[np.ndarray, np.ndarray]:
    """The full table of the user's cache (distilled there once)."""
    return load_table()


@pytest.mark.slow
def test_the_full_distillation_is_deterministic_and_replaces_older_versions(full_table, empty_cache):
    older = empty_cache / re.sub(r"-t\d+-", "-t0-", table_path().name)
    older.write_bytes(b"an older table")
    embeddings, token_ids = load_table()
    assert distilled.distilled_tables[-1] == table_path() and not older.exists()
    assert np.array_equal(token_ids, full_table[1])
    assert np.abs(embeddings.astype(np.float32) - full_table[0]).max() < 1e-3


def test_wordllama_is_the_default_static_model_where_installed_and_a_static_store_keeps_its_own(tmp_path,
                                                                                                monkeypatch):
    store = open_store(str(tmp_path / "memory.db"))
    try:
        assert static_name(store, None) == "wordllama" and static_name(store, "minilm-static") == "minilm-static"
        monkeypatch.setattr(progressive_module, "PREFERRED_STATIC", "a_package_not_installed")  # wordllama's wheel absent
        assert static_name(store, None) == "minilm-static"
        monkeypatch.undo()
        with pytest.raises(SparkyError, match="--static must be a static model"):
            static_name(store, "minilm")
        store.ensure_schema(recorded_model("wordllama"), 256)
        assert static_name(store, None) == "wordllama"
    finally:
        store.close()


def test_a_progressive_ingest_with_minilm_static_ends_with_minilm_primary_and_is_searchable(tmp_path):
    url, progress = str(tmp_path / "memory.db"), str(tmp_path / "progress.json")
    result = CliRunner().invoke(cli, ["ingest", str(SAMPLE), "--progressive", "--static", "minilm-static", "--db",
                                      url, "--progress-file", progress, "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert f"Pass 1 done: searchable now ({distilled.MODEL})" in result.output
    store = open_store(url, create=False)
    try:
        chunks = store.stats()["chunks"]
        minilm = get_embedder("minilm")
        assert store.space_vectors() == {Space(distilled.MODEL, 256): chunks, Space(minilm.model, 384): chunks}
        assert store.meta()["model"] == minilm.model
    finally:
        store.close()
    found = CliRunner().invoke(cli, ["search", "how do I upgrade django", "--db", url, "--format", "json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["results"]
    static_only = CliRunner().invoke(cli, ["search", "how do I upgrade django", "--db", url, "--space",
                                           "minilm-static", "--mode", "vector", "--format", "json"])
    assert static_only.exit_code == 0 and json.loads(static_only.output)["results"]


def progressive(url: str, folder, stop_between: bool = False, stop_after: int | None = None) -> None:
    """The sample export's progressive ingestion with minilm-static, stopped between the passes or after
    ``stop_after`` batches of pass 2."""
    stop = StopRequest()
    store = open_store(url)
    try:
        ProgressiveIngestion(SAMPLE, folder / "progress.json", store, get_embedder("minilm-static"),
                             get_embedder("minilm"), Display(Console(file=io.StringIO()), quiet=True),
                             StopAfter(stop, stop_after), batch_chunks=16, stop=stop,
                             between=(lambda _: stop.event.set()) if stop_between else None).run()
    finally:
        store.close()


def test_a_store_mid_way_keeps_its_static_model_and_is_searched_in_both_spaces(tmp_path):
    url = str(tmp_path / "memory.db")
    progressive(url, tmp_path, stop_between=True)
    progressive(url, tmp_path, stop_after=3)
    minilm = get_embedder("minilm")
    store = open_store(url, create=False)
    try:
        assert store.meta()["model"] == distilled.MODEL
        assert 0 < store.space_vectors()[Space(minilm.model, 384)] < store.stats()["chunks"]
        plan = SpacePlanner(store).plan()
        assert plan.mixed and plan.spaces[1] == Space(distilled.MODEL, 256)
        assert Searcher(store).search("how do I upgrade django", k=5, mode="vector")
    finally:
        store.close()
    args = ["ingest", str(SAMPLE), "--db", url, "--progress-file", str(tmp_path / "progress.json"), "--quiet"]
    refused = CliRunner().invoke(cli, [*args, "--progressive", "--static", "wordllama"])
    assert refused.exit_code != 0 and f"its static space is {distilled.MODEL}" in refused.output
    assert "Traceback" not in refused.output
    plain = CliRunner().invoke(cli, [*args, "--static", "minilm-static"])
    assert plain.exit_code != 0 and "--static names the first pass of --progressive" in plain.output
    resumed = CliRunner().invoke(cli, args)  # the pending pass 2, with the store's own static model
    assert resumed.exit_code == 0, resumed.output
    store = open_store(url, create=False)
    try:
        assert store.meta()["model"] == minilm.model
        assert store.space_vectors()[Space(minilm.model, 384)] == store.stats()["chunks"]
    finally:
        store.close()


def test_a_minilm_static_store_is_searched_with_its_own_hybrid_floor(tmp_path):
    """Its cosines run above MiniLM's: under MiniLM's hybrid floor an unrelated query got results."""
    from sparky.search import FLOORS, MODEL_FLOORS

    model = get_embedder("minilm-static")
    texts = ["The rsync script copies the code folders to the NAS every night at two from cron.",
             "Use a 1500 VA UPS: at our load it keeps the server up for about 22 minutes."]
    store = embedded_store(tmp_path / "static.db", model, texts, "Home lab")
    try:
        searcher = Searcher(store)
        assert searcher.floor_for("hybrid") == MODEL_FLOORS["minilm-static"]["hybrid"] > FLOORS["hybrid"]
        assert searcher.floor_for("vector") == FLOORS["vector"]
        [hit] = searcher.search("the rsync script that copies my code folders to the NAS every night", k=1)
        assert hit.text == texts[0]
        unrelated = "treating varroa mites in a beehive"
        [weak] = searcher.search(unrelated, k=1, floor=False)
        assert weak.score < MODEL_FLOORS["minilm-static"]["hybrid"] and searcher.search(unrelated, k=1) == []
    finally:
        store.close()
