"""Terms of unspaced scripts (Chinese, Japanese) are found inside longer runs, on both stores alike."""

from __future__ import annotations

import math

import numpy as np
import pytest

from support.postgres import postgres_database, postgres_server, postgres_url  # noqa: F401
from sparky.models import Conversation, Message
from sparky.stores import MessageRecord, StoreFilters, open_store
from sparky.stores.substring import K1

TEXTS = ["東京でラーメンを食べた。ラーメンは最高", "駅前のラーメン屋", "京都の寺を歩いた", "The ramen in Tokyo"]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "memory.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.ensure_schema("test-model", 2)
    conversation = Conversation("chatgpt", "trip", "Japan", 1.0, 2.0)
    records = []
    for position, text in enumerate(TEXTS):
        message = Message("trip", f"m{position}", "user" if position % 2 == 0 else "assistant", 1.0, text, position)
        records.append(MessageRecord(message.key("chatgpt"), conversation, message, (text,),
                                     np.ones((1, 2), np.float32) / math.sqrt(2)))
    store.upsert(records)
    yield store
    store.close()


def texts(store, hits) -> list[str]:
    rows = store.messages([hit.message for hit in hits])
    return [rows[hit.message].text for hit in hits]


def expected_score(tf: int, df: int, total: int = len(TEXTS)) -> float:
    return max(math.log((total - df + 0.5) / (df + 0.5)), 1e-6) * tf * (K1 + 1) / (tf + K1)


def test_a_term_is_found_inside_a_run_and_ranked_by_its_occurrences(store):
    hits = store.keyword_hits(["ラーメン"], StoreFilters(), 5)
    assert texts(store, hits) == [TEXTS[0], TEXTS[1]]
    assert [round(hit.score, 9) for hit in hits] == [round(expected_score(2, 2), 9), round(expected_score(1, 2), 9)]


def test_a_two_character_term_and_a_mixed_query(store):
    assert texts(store, store.keyword_hits(["東京"], StoreFilters(), 5)) == [TEXTS[0]]
    mixed = store.keyword_hits(["Tokyo", "京都"], StoreFilters(), 5)
    assert sorted(texts(store, mixed)) == sorted([TEXTS[2], TEXTS[3]])


def test_filters_apply_to_substring_hits(store):
    assert texts(store, store.keyword_hits(["ラーメン"], StoreFilters(role="assistant"), 5)) == [TEXTS[1]]


def test_a_deleted_message_is_no_longer_found(store):
    [hit] = store.keyword_hits(["駅前"], StoreFilters(), 5)
    store.delete_keys([store.messages([hit.message])[hit.message].key])
    assert store.keyword_hits(["駅前"], StoreFilters(), 5) == []
    assert texts(store, store.keyword_hits(["ラーメン"], StoreFilters(), 5)) == [TEXTS[0]]
