"""Re-importing a newer export: which messages are new, changed or unchanged, and what was replaced.

A message is recognised across exports by its source, conversation and message id; its key also covers
its text, so an edited text is a new key under the same id. Storing it supersedes the version stored
(kept, hidden from search by default). A stored message whose id is no longer in its conversation's
branch (a regenerated answer, an edit that started a new branch) is superseded once that conversation's
new messages are all stored. Conversations the export no longer holds are kept unless ``--prune`` (one it
holds but could not read, or withholds as "do not remember", is not absent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..stores import Store
from ..stores.records import StoredConversation
from .scan import ExportScan


@dataclass
class VersionPlan:
    """What a run will do to the store's versions, worked out after the scan."""

    new: set[str] = field(default_factory=set)  # keys of messages the store has never held
    changed: set[str] = field(default_factory=set)  # keys of new texts for messages the store holds
    unchanged: int = 0
    replaced: dict[str, list[str]] = field(default_factory=dict)  # conversation -> keys left off its branch
    absent: list[tuple[str, StoredConversation]] = field(default_factory=list)  # (source, conversation)


def plan_versions(scan: ExportScan, store: Store, stored: set[str]) -> VersionPlan:
    """Compare the export with the current versions the store holds (``stored``: its keys already current)."""
    plan = VersionPlan()
    current = store.current_versions((scan.sources[cid], cid) for cid in scan.conversation_keys)
    for cid, keys in scan.conversation_keys.items():
        versions = current.get((scan.sources[cid], cid), {})
        for key, message_id in zip(keys, scan.message_ids[cid]):
            if key in stored:
                plan.unchanged += 1
            elif message_id in versions:
                plan.changed.add(key)
            else:
                plan.new.add(key)
        branch = scan.branch_ids[cid]
        gone = [key for message_id, key in versions.items() if message_id not in branch]
        if gone:
            plan.replaced[cid] = gone
    for source in sorted(set(scan.sources.values())):
        plan.absent += [(source, conversation) for conversation in store.stored_conversations(source)
                        if conversation.conversation_id not in scan.conversation_keys
                        and conversation.conversation_id not in scan.unread_ids]
    return plan
