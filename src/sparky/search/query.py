"""Reading what the person typed: the words worth matching, and dates."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone

from ..errors import SparkyError
from ..stores.substring import SUBSTRING_SCRIPT

HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


class SearchError(SparkyError):
    """A search that cannot run as asked: empty query, missing or empty store, unknown conversation…"""


ENGLISH_STOPWORDS = frozenset(  # the usual English list (NLTK's, without contractions)
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers"
    " herself it its itself they them their theirs themselves what which who whom this that these those am is"
    " are was were be been being have has had having do does did doing a an the and but if or because as until"
    " while of at by for with about against between into through during before after above below to from up"
    " down in out on off over under again further then once here there when where why how all any both each"
    " few more most other some such no nor not only own same so than too very s t can will just don should now"
    .split()
)
OTHER_STOPWORDS = frozenset(  # and the commonest function words of the other languages written with spaces that people
    # ask in most (Spanish, German, French, Portuguese, Italian, Dutch, Polish): without them, a question's
    # "de", "die" or "w" is a rare word among English messages, and matches any message in that language
    "el la los las un una unos unas de del al y o que en es por para con se su sus lo le como más pero mi"
    " me te muy ya cómo qué cuál dónde cuándo hay son está"  # es
    " der die das den dem des ein eine einen einem einer und oder ist sind ich du er sie es wir ihr mit von"
    " zu im am auf für nicht wie was wo wann bei aus auch noch"  # de
    " le les une et ou est sont je tu il elle nous vous ils du au aux dans sur pour avec pas ne ce cette qui"
    " comment quand où"  # fr
    " o os as um uma e é são eu com do da dos das no na nos nas em para não como"  # pt
    " il lo gli di del della e è sono io con per non come che"  # it
    " het een en ik je hij zij wij met van voor op niet hoe wat waar"  # nl
    " i w z na do się nie jest są to że jak co czy od po za dla przy ten ta o"  # pl
    .split()
)
STOPWORDS = ENGLISH_STOPWORDS | OTHER_STOPWORDS  # never in the keyword query
FOREIGN_MARKERS = OTHER_STOPWORDS - ENGLISH_STOPWORDS  # function words that say a query is not English


def keyword_terms(query: str, fine: bool = False) -> list[str]:
    """The words of the query a keyword search should match, in order, each once.

    Tokens are split on whitespace and kept only if they hold a letter or digit; common words (English,
    and the function words of a few other languages) are left out unless nothing else remains. A token
    written only in a script matched as substrings (Chinese, Japanese, Korean) becomes the overlapping
    pieces of its runs (``pieces``; with ``fine``, bigrams), so that a whole Japanese sentence, one token, is
    matched by its parts, and a Korean word by its stem without its particle.
    """
    tokens = [token for token in query.split() if any(char.isalnum() for char in token)]
    content = [token for token in tokens if _bare(token) not in STOPWORDS]
    return list(dict.fromkeys(term for token in content or tokens for term in pieces(token, fine)))


def unlike_english(query: str) -> bool:
    """Whether the query is likely not English: most of its letters are outside the Latin script, or it
    holds more function words of the other languages ``STOPWORDS`` lists than English ones."""
    letters = [char for char in query if char.isalpha()]
    latin = sum(unicodedata.name(char, "").startswith("LATIN") for char in letters)
    if latin * 2 < len(letters):
        return True
    words = [_bare(token) for token in query.split()]
    return sum(word in FOREIGN_MARKERS for word in words) > sum(word in ENGLISH_STOPWORDS for word in words)


def pieces(token: str, fine: bool = False) -> list[str]:
    """A token as keyword terms: itself, or (written only in a substring script) its runs of that script:
    a Korean word of three or four syllables as its overlapping bigrams (its stem without its particle),
    any other run of four characters or more as its overlapping trigrams (what a trigram index serves: a
    bigram is found only by reading every chunk, 0.4 s per query at 9k chunks against 9 ms), or with
    ``fine`` as its bigrams (the two-character words inside it), a shorter run whole."""
    if not all(SUBSTRING_SCRIPT.match(char) for char in token if char.isalnum()):
        return [token]
    runs = re.findall(f"{SUBSTRING_SCRIPT.pattern}+", token)
    return [piece for run in runs for piece in _windows(run, fine)]


def _windows(run: str, fine: bool) -> list[str]:
    size = 2 if len(run) >= 3 and (fine or len(run) <= 4 and HANGUL.match(run)) else 3 if len(run) >= 4 else len(run)
    return [run[i:i + size] for i in range(len(run) - size + 1)]


def clean_query(query: str) -> str:
    """The query in NFC with control characters (a NUL, an escape sequence pasted from a terminal) read as
    spaces; SearchError when nothing is left to look for."""
    text = "".join(" " if unicodedata.category(char) in ("Cc", "Cf", "Cs") else char
                   for char in unicodedata.normalize("NFC", query)).strip()
    if not text:
        raise SearchError("empty query: say what to look for")
    return " ".join(text.split())


def _bare(token: str) -> str:
    return "".join(char for char in token if char.isalnum()).casefold()


def parse_when(text: str, end: bool = False) -> float:
    """Epoch seconds for a date (YYYY, YYYY-MM, YYYY-MM-DD) or ISO date-time, UTC unless an offset is given.

    With ``end``, the first instant after the period named: ``2024-03`` ends at 2024-04-01T00:00Z.
    """
    text = text.strip()
    match = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
    try:
        if match:
            year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
            start = datetime(year, month, day, tzinfo=timezone.utc)
            if not end:
                return start.timestamp()
            if match[3]:
                return (start + timedelta(days=1)).timestamp()
            if match[2]:
                return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
            return datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SearchError(f"{text!r}: not a date; use YYYY-MM-DD (or YYYY-MM, YYYY, or an ISO date-time)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    step = timedelta(seconds=1) if re.search(r"\d:\d{2}:\d", text) else timedelta(minutes=1)
    return (moment + step).timestamp() if end else moment.timestamp()


def iso_date(epoch: float | None) -> str | None:
    """ISO 8601 UTC to the second, or None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
