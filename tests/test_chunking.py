"""Chunking in the model's own tokens: windows respected, overlap kept, every token covered."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparky.pipeline.chunking import chunk_message, chunk_messages, split_tokens
from sparky.embedders import get_embedder


@pytest.fixture(scope="module")
def minilm():
    return get_embedder("minilm")


def sentences(count: int) -> list[str]:
    words = "memory export message vector search chunk garden recipe budget meeting python error".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 9)).capitalize() + "."
            for i in range(count)]


def check_chunks(text: str, chunks, embedder, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Each chunk fits, consecutive chunks overlap, and together they cover every token and character.

    Returns where each chunk sits in the text (chunk texts are slices of it, cut between tokens)."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert max(embedder.count_tokens([c.text for c in chunks])) <= max_tokens
    tokens = embedder.tokenize([text])[0]
    ranges = split_tokens(text, tokens, max_tokens - embedder.special_tokens, overlap)
    covered = set().union(*(range(start, end) for start, end in ranges))
    assert covered == set(range(len(tokens.spans)))
    for (_, end), (next_start, _) in zip(ranges, ranges[1:]):
        assert end - next_start >= overlap
    places = [(tokens.spans[start][0], tokens.spans[end - 1][1]) for start, end in ranges]
    places[0], places[-1] = (0, places[0][1]), (places[-1][0], len(text))
    assert [c.text for c in chunks] == [text[start:end] for start, end in places]
    for (_, end), (next_start, _) in zip(places, places[1:]):
        assert next_start < end if overlap else not text[end:next_start].strip()  # no text between chunks
    return places


def test_short_message_is_one_chunk_with_the_whole_text(minilm):
    text = "  Hello there!\nHow are you?  "
    assert [(c.message_key, c.index, c.text) for c in chunk_message("k", text, minilm)] == [("k", 0, text)]


def test_exactly_the_window_is_one_chunk_and_one_more_token_is_two(minilm):
    fits = " ".join(["memory"] * 254)  # + [CLS] and [SEP] = 256
    assert minilm.count_tokens([fits]) == [256]
    assert len(chunk_message("k", fits, minilm)) == 1
    assert len(chunk_message("k", fits + " memory", minilm)) == 2


def test_long_message_is_split_into_overlapping_chunks_within_the_window(minilm):
    text = " ".join(sentences(300))
    chunks = chunk_message("key", text, minilm)
    assert len(chunks) >= 5 and all(c.message_key == "key" for c in chunks)
    check_chunks(text, chunks, minilm, 256, 32)


def test_chunks_end_at_paragraph_breaks_when_one_is_near_the_limit(minilm):
    text = "\n\n".join(f"Paragraph {i}. " + " ".join(["memory"] * 97) + "." for i in range(12))  # 101 tokens
    chunks = chunk_message("k", text, minilm)
    assert len(chunks) >= 5
    for _, end in check_chunks(text, chunks, minilm, 256, 32)[:-1]:
        assert text[end : end + 2] == "\n\n"


def test_chunks_end_at_sentence_ends_without_paragraphs(minilm):
    text = " ".join(sentences(200))
    chunks = chunk_message("k", text, minilm)
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_cjk_emoji_and_accents(minilm):
    text = ("我想学习中文，有什么好的方法吗？" * 40 + " 🙂🚀 launch day!!! Ça va très bien, merci. ") * 3
    chunks = chunk_message("k", text, minilm)
    assert len(chunks) > 3
    check_chunks(text, chunks, minilm, 256, 32)


def test_text_without_spaces(minilm):
    url_like = "/".join(f"segment{i}?id={i}&x=y" for i in range(200))  # punctuation separates the words
    chunks = chunk_message("k", url_like, minilm)
    assert len(chunks) > 3
    check_chunks(url_like, chunks, minilm, 256, 32)
    one_word = "a" * 5000  # longer than WordPiece's 100 characters per word: one [UNK], kept whole
    assert [c.text for c in chunk_message("k", one_word, minilm)] == [one_word]


def test_a_long_run_without_word_starts_still_advances_by_most_of_the_window():
    from sparky.embedders import Tokens

    text = "x" * 2000  # e.g. a tokenizer that splits a long identifier into 2,000 continuation tokens
    tokens = Tokens([(i, i + 1) for i in range(2000)], [True] + [False] * 1999)
    ranges = split_tokens(text, tokens, 254, 32)
    assert len(ranges) == 9  # ceil((2000 - 32) / (254 - 32)): overlap stays 32, not one token of progress
    assert all(end - start <= 254 for start, end in ranges) and ranges[-1][1] == 2000
    assert all(end - next_start == 32 for (_, end), (next_start, _) in zip(ranges, ranges[1:]))


def test_a_word_start_is_sought_back_at_most_half_a_window():
    from sparky.embedders import Tokens

    starts = [i % 100 == 0 for i in range(1000)]  # a word every 100 tokens
    ranges = split_tokens("y" * 1000, Tokens([(i, i + 1) for i in range(1000)], starts), 200, 20)
    for (start, end), (next_start, _) in zip(ranges, ranges[1:]):
        assert end - 100 <= next_start <= end - 20 and next_start > start
        assert starts[next_start] or end - next_start == 20


def test_empty_and_blank_texts_are_one_chunk(minilm):
    assert [c.text for c in chunk_message("k", "", minilm)] == [""]
    assert [c.text for c in chunk_message("k", " \n\t ", minilm)] == [" \n\t "]


def test_batch_api_matches_one_by_one(minilm):
    items = [("a", "short"), ("b", " ".join(sentences(300))), ("c", ""), ("d", "我想学习中文" * 100)]
    expected = [chunk for key, text in items for chunk in chunk_message(key, text, minilm)]
    assert chunk_messages(items, minilm) == expected
    assert chunk_messages([], minilm) == []


def test_overlap_must_leave_room_to_advance(minilm):
    with pytest.raises(ValueError, match="overlap"):
        chunk_message("k", "text", minilm, max_tokens=64, overlap=31)
    text = "one two three four five six seven"
    check_chunks(text, chunk_message("k", text, minilm, max_tokens=5, overlap=0), minilm, 5, 0)


WORD = st.text(st.sampled_from("abcdeé语文🙂.,!?-'"), min_size=1, max_size=6)
SEPARATOR = st.sampled_from([" ", "  ", "\n", "\n\n", " \t"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.tuples(WORD, SEPARATOR), max_size=400))
def test_any_text_is_fully_covered_by_chunks_that_fit(minilm, words):
    text = "".join(word + separator for word, separator in words)
    chunks = chunk_message("k", text, minilm, max_tokens=48, overlap=8)
    if len(chunks) == 1:
        assert chunks[0].text == text and minilm.count_tokens([text])[0] <= 48
    else:
        check_chunks(text, chunks, minilm, 48, 8)
