"""The fusions of the vector and keyword sides (issue 13): the combined score discounts keyword hits on
common words and keeps rare-word hits strong; reciprocal rank fusion, the fusion before it, stays callable."""

from __future__ import annotations

import math

import pytest

from sparky.search import combine, fuse
from sparky.search.fusion import KEYWORD_OFFSET, KEYWORD_SCALE, VECTOR_WEIGHT, keyword_evidence
from sparky.stores import ChunkHit

DOCUMENTS = 20_000
RARE = math.log((DOCUMENTS - 0.5) / 1.5)  # BM25 of a short chunk holding a word found once, about


def hits(*pairs: tuple[int, float]) -> list[ChunkHit]:
    return [ChunkHit(message, message * 10, score) for message, score in pairs]


def test_keyword_evidence_is_nothing_for_common_words_and_full_for_a_rare_one():
    assert keyword_evidence(0.1 * RARE, DOCUMENTS) == 0.0
    assert keyword_evidence(RARE * (KEYWORD_OFFSET + KEYWORD_SCALE), DOCUMENTS) == pytest.approx(1.0)
    assert keyword_evidence(5 * RARE, DOCUMENTS) == 1.0
    weak, strong = keyword_evidence(0.5 * RARE, DOCUMENTS), keyword_evidence(0.7 * RARE, DOCUMENTS)
    assert 0.0 < weak < strong <= 1.0


def test_evidence_is_relative_to_the_size_of_the_store():
    """The same BM25 is more evidence in a small store, where no word can have a high IDF."""
    assert keyword_evidence(3.0, 100) > keyword_evidence(3.0, 100_000)


def test_a_keyword_hit_on_common_words_does_not_outrank_a_closer_vector_hit():
    vector = hits((1, 0.62), (2, 0.35), (3, 0.30))
    keyword = hits((2, 0.15 * RARE), (3, 0.12 * RARE))  # "small", "start": words many messages hold
    ranked = combine(vector, keyword, DOCUMENTS)
    assert [message for message, _ in ranked] == [1, 2, 3]
    assert ranked[0][1] == pytest.approx(VECTOR_WEIGHT * 0.62)
    assert [message for message, _ in fuse([vector, keyword])][0] == 2  # RRF: both sides count alike


def test_a_rare_word_hit_lifts_its_message_above_closer_vector_hits():
    vector = hits((1, 0.55), (2, 0.50), (3, 0.40))
    ranked = combine(vector, hits((3, 1.2 * RARE)), DOCUMENTS)
    assert [message for message, _ in ranked][0] == 3
    assert ranked[0][1] == pytest.approx(VECTOR_WEIGHT * 0.40 + (1 - VECTOR_WEIGHT))


def test_a_message_only_the_keyword_side_found_gets_the_lowest_cosine_seen():
    ranked = dict(combine(hits((1, 0.6), (2, 0.2)), hits((9, RARE)), DOCUMENTS))
    assert ranked[9] == pytest.approx(VECTOR_WEIGHT * 0.2 + (1 - VECTOR_WEIGHT) * keyword_evidence(RARE, DOCUMENTS))


def test_one_side_alone_and_negative_cosines():
    assert combine([], hits((4, RARE)), DOCUMENTS) == [(4, pytest.approx((1 - VECTOR_WEIGHT)
                                                                         * keyword_evidence(RARE, DOCUMENTS)))]
    assert combine(hits((1, -0.2)), [], DOCUMENTS) == [(1, 0.0)]


def test_reciprocal_rank_fusion_sums_the_reciprocal_ranks():
    ranked = fuse([hits((1, 0.9), (2, 0.8)), hits((2, 5.0), (3, 4.0))], rrf_k=10)
    assert ranked[0] == (2, pytest.approx(1 / 12 + 1 / 11))
    assert [message for message, _ in ranked] == [2, 1, 3]


def test_a_hit_on_one_word_of_a_long_query_is_little_evidence():
    """BM25 is measured against what all of the query's words could score: one rare word of five is a
    fifth of it."""
    assert keyword_evidence(RARE, DOCUMENTS, terms=5) == keyword_evidence(RARE / 5, DOCUMENTS)
    assert keyword_evidence(RARE, DOCUMENTS, terms=5) < keyword_evidence(RARE, DOCUMENTS, terms=1)


def test_function_words_of_other_languages_are_not_keyword_terms():
    """A question's "de", "die" or "w" would be a rare word among English messages, matching any message
    in that language."""
    from sparky.search import keyword_terms

    assert keyword_terms("¿cómo se poda un bonsái de olivo?") == ["poda", "bonsái", "olivo?"]
    assert keyword_terms("Wie wechsle ich die Zündkerzen am Motorrad?") == ["wechsle", "Zündkerzen", "Motorrad?"]
    assert keyword_terms("jak wymienić uszczelkę w kranie") == ["wymienić", "uszczelkę", "kranie"]
