"""A first, cheap pass over an export: which meaningful messages it holds, by conversation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ..readers import ExportReader
from .select import Selector, unique_ids


class ScanInterrupted(Exception):
    """The scan was asked to stop before it finished."""


@dataclass
class ExportScan:
    """The message keys of every conversation, in reading order, and what was left out.

    ``message_ids`` runs beside ``conversation_keys``; ``branch_ids`` holds every message id of a
    conversation's branch as read, the ones left out included (a stored message whose id is no longer in
    its branch was replaced: by a regenerated answer, or an edit that started a new branch)."""

    conversation_keys: dict[str, list[str]] = field(default_factory=dict)
    message_ids: dict[str, list[str]] = field(default_factory=dict)
    branch_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    unread_ids: set[str] = field(default_factory=set)  # held by the export but not read: malformed, withheld
    dropped: Counter = field(default_factory=Counter)
    skipped_conversations: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_messages(self) -> int:
        return sum(len(keys) for keys in self.conversation_keys.values())

    def all_keys(self) -> list[str]:
        return [key for keys in self.conversation_keys.values() for key in keys]


def scan_export(reader: ExportReader, should_stop: Callable[[], bool] = lambda: False) -> ExportScan:
    """Read the whole export once, keeping only keys, so memory stays small."""
    scan = ExportScan()
    selector = Selector()
    for conversation in reader.conversations():
        if should_stop():
            raise ScanInterrupted()
        messages = selector.select(conversation)
        scan.conversation_keys[conversation.id] = [m.key(conversation.source) for m in messages]
        scan.message_ids[conversation.id] = [m.id for m in messages]
        scan.branch_ids[conversation.id] = frozenset(m.id for m in unique_ids(conversation.messages))
        scan.sources[conversation.id] = conversation.source
        scan.titles[conversation.id] = conversation.title
    scan.dropped = selector.dropped + reader.content_counts
    scan.skipped_conversations = list(reader.skipped)
    scan.unread_ids = {label for label, _ in reader.skipped} | set(reader.withheld_ids)
    return scan
