"""The timeline: counts per week or month, and the geometry of its bar chart (drawn as SVG by a template).

Periods are UTC; a week starts on Monday and is named by that day (``2024-03-04``), a month by
``2024-03``. Every period from the first dated one to the last is shown, empty ones too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from ..stores.reads import DayCounts

GRANULARITIES = ("month", "week")
EPOCH = date(1970, 1, 1)
WIDTH = 960  # the chart's coordinate system (it scales to the page)
HEIGHT = 260
TOP = 10
BOTTOM = 40  # room for the period labels
LEFT = 8
MAX_LABELS = 16


@dataclass(frozen=True)
class Period:
    """A week or a month with what it holds."""

    name: str
    start: date
    end: date  # exclusive
    conversations: int
    messages: int

    @property
    def bounds(self) -> tuple[float, float]:
        """``[start, end)`` in epoch seconds."""
        return _epoch(self.start), _epoch(self.end)


@dataclass(frozen=True)
class Bar:
    """One period's two bars (conversations, messages), its hit area and label, in chart coordinates."""

    period: Period
    x: float
    width: float
    conversations_y: float
    conversations_height: float
    messages_y: float
    messages_height: float
    label: str | None


@dataclass(frozen=True)
class Chart:
    """The bars and the scales (the largest counts, and where their lines are drawn)."""

    bars: list[Bar]
    width: int
    height: int
    baseline: float
    most_conversations: int
    most_messages: int


def period_of(day: date, by: str) -> tuple[date, date]:
    """The ``[start, end)`` days of the period ``day`` falls in."""
    if by == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, (start.replace(year=start.year + 1, month=1) if start.month == 12
                   else start.replace(month=start.month + 1))


def period_named(name: str, by: str) -> Period | None:
    """The period a name (``2024-03`` or a week's Monday ``2024-03-04``) stands for, or None."""
    try:
        day = date.fromisoformat(name + "-01" if by == "month" else name)
    except ValueError:
        return None
    start, end = period_of(day, by)
    return Period(_name(start, by), start, end, 0, 0) if _name(start, by) == name else None


def periods(counts: DayCounts, by: str) -> list[Period]:
    """Every period from the first dated day to the last, with its counts."""
    days = set(counts.conversations) | set(counts.messages)
    if not days:
        return []
    totals: dict[date, list[int]] = {}
    for source, index in ((counts.conversations, 0), (counts.messages, 1)):
        for number, count in source.items():
            totals.setdefault(period_of(EPOCH + timedelta(days=number), by)[0], [0, 0])[index] += count
    found = []
    start, _ = period_of(EPOCH + timedelta(days=min(days)), by)
    last, _ = period_of(EPOCH + timedelta(days=max(days)), by)
    while start <= last:
        end = period_of(start, by)[1]
        conversations, messages = totals.get(start, (0, 0))
        found.append(Period(_name(start, by), start, end, conversations, messages))
        start = end
    return found


def chart(found: list[Period]) -> Chart:
    """Bars for the periods: conversations and messages side by side, each on its own scale."""
    most_conversations = max((period.conversations for period in found), default=0)
    most_messages = max((period.messages for period in found), default=0)
    baseline = HEIGHT - BOTTOM
    room = baseline - TOP
    slot = (WIDTH - LEFT) / max(len(found), 1)
    every = max(1, -(-len(found) // MAX_LABELS))  # label every n-th period
    bars = []
    for index, period in enumerate(found):
        conversations = room * period.conversations / most_conversations if most_conversations else 0.0
        messages = room * period.messages / most_messages if most_messages else 0.0
        bars.append(Bar(period, LEFT + index * slot, slot, baseline - conversations, conversations,
                        baseline - messages, messages, period.name if index % every == 0 else None))
    return Chart(bars, WIDTH, HEIGHT, baseline, most_conversations, most_messages)


def _name(start: date, by: str) -> str:
    return start.isoformat() if by == "week" else start.strftime("%Y-%m")


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
