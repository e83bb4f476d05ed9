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


# A small real store (MiniLM): an exchange in Korean, one in Spanish, one in Japanese, two in English.
EXCHANGES = [
    ("kimchi", "김치찌개 끓이기", "맛있는 김치찌개 만드는 방법 알려줘",
     "잘 익은 신김치 300g과 돼지고기 앞다리살 200g을 준비하세요. 돼지고기를 먼저 볶다가 김치를 넣고 5분 더"
     " 볶습니다. 쌀뜨물 500ml를 부어 20분 끓입니다. 두부와 대파를 넣고 5분 더 끓이면 완성입니다."),
    ("paella", "Paella valenciana", "¿Cómo hago una paella valenciana auténtica para seis personas?",
     "Para seis personas usa una paellera de 50 cm. Sofríe 800 g de pollo y 400 g de conejo en aceite de"
     " oliva, añade judía verde y garrofó, luego tomate rallado. Reparte 600 g de arroz bomba y deja reposar"
     " 5 minutos tapada con un paño."),
    ("fuji", "富士山登山の準備", "8月に初めて富士山に登ります。何を準備すればいいですか？",
     "吉田ルートなら五合目から山頂まで登りに約6時間かかります。山頂は真夏でも気温が5度前後なので、フリースと"
     "防水のレインウェアは必須です。山小屋は予約が必要で、高山病を防ぐために八合目で一泊するのがおすすめです。"),
    ("docker", "Docker permissions", "docker ps says permission denied on the daemon socket",
     "Your user is not in the docker group: run sudo usermod -aG docker $USER and log in again."),
    ("bread", "Sourdough", "My sourdough starter has not bubbled after three days.",
     "Keep the starter around 24 °C and feed it twice a day with equal weights of flour and water."),
]


@pytest.fixture(scope="module")
def languages(tmp_path_factory):
    import numpy as np

    from sparky.embedders import get_embedder
    from sparky.models import Conversation, Message
    from sparky.search import Searcher, open_for_search
    from sparky.stores import MessageRecord
    from sparky.stores.sqlite import SQLiteStore

    embedder = get_embedder("minilm")
    path = tmp_path_factory.mktemp("languages") / "memory.db"
    store = SQLiteStore(path)
    store.ensure_schema(embedder.model, embedder.dimensions)
    records = []
    for number, (name, title, question, answer) in enumerate(EXCHANGES):
        conversation = Conversation("chatgpt", name, title, 1.7e9 + number, None)
        for position, (role, text) in enumerate((("user", question), ("assistant", answer))):
            message = Message(name, f"{name}-{position}", role, 1.7e9 + number, text, position)
            records.append(MessageRecord(message.key("chatgpt"), conversation, message, (text,),
                                         np.asarray(embedder.embed([text]), dtype=np.float32)))
    store.upsert(records)
    store.close()
    opened = open_for_search(str(path))
    yield Searcher(opened, "minilm")
    opened.close()


def test_unlike_english_reads_the_script_and_the_function_words():
    from sparky.search.query import unlike_english

    assert unlike_english("오로라를 보기 가장 좋은 달은 언제예요?") and unlike_english("火山の噴火を予知する方法")
    assert unlike_english("تاريخ الإمبراطورية العثمانية") and unlike_english("jak wymienić uszczelkę w kranie")
    assert unlike_english("¿cómo se poda un bonsái de olivo?") and unlike_english("Wie wechsle ich die Zündkerzen?")
    assert not unlike_english("how do I tune a concert harp") and not unlike_english("quantum chromodynamics gluon")
    assert not unlike_english("what is a car") and not unlike_english("docker compose up")


@pytest.mark.parametrize("query", ["오로라를 보기 가장 좋은 달은 언제예요?", "¿cómo se poda un bonsái de olivo?"])
def test_a_question_unlike_english_with_no_answer_is_said_to_have_none(languages, query):
    """MiniLM rates texts of one language other than English alike: the Korean (Spanish) messages stand
    above the hybrid floor by their cosine alone, but share no word with the question, so it has no answer."""
    from sparky.search import FLOORS

    unfloored = languages.search(query, k=1, floor=False)
    assert unfloored and unfloored[0].score >= FLOORS["hybrid"] and unfloored[0].keyword_score is None
    assert languages.search(query, k=5) == []


@pytest.mark.parametrize("query, conversation", [
    ("찌개에 두부는 언제 넣어요?", "kimchi"),  # "찌개에" is found inside "김치찌개", "두부" inside "두부와"
    ("¿cuánto tiempo reposa el arroz al final?", "paella"),
    ("富士山の持ち物", "fuji"),  # its trigram 富士山 is in the question
    ("富士登山の持ち物", "fuji"),  # no trigram matches: its bigram 富士 (a read of every chunk) is in the question
    ("docker permission denied", "docker"),
])
def test_an_answerable_question_keeps_its_answer(languages, query, conversation):
    [first, *_] = languages.search(query, k=5)
    assert first.conversation_id == conversation


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_one_common_bigram_of_a_japanese_sentence_is_no_match(languages, mode):
    """None of the trigrams of 火山の噴火を予知する方法 ("how to predict volcanic eruptions") is in the store,
    so its bigrams are looked up, and of those only する is (in 一泊する): one piece of eleven is no evidence,
    in keyword mode as in hybrid mode."""
    query = "火山の噴火を予知する方法"
    unfloored = languages.search(query, k=3, mode=mode, floor=False)
    assert any(result.conversation_id == "fuji" for result in unfloored)
    assert languages.search(query, k=3, mode=mode) == []


def test_the_cli_says_why_a_question_not_in_english_found_nothing(languages):
    """A no-answer question in Spanish over an English-only model: the message names the shared-words rule,
    and an English one only the floor."""
    from click.testing import CliRunner

    from sparky.cli import cli

    db = languages.store.url
    spanish = CliRunner().invoke(cli, ["search", "¿cuál es la capital de Mongolia?", "--db", db])
    assert spanish.exit_code == 0 and "shares enough words with this question" in spanish.output
    english = CliRunner().invoke(cli, ["search", "quantum chromodynamics gluon", "--db", db])
    assert english.exit_code == 0 and "No good match" in english.output and "shares" not in english.output
