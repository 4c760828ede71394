"""OpenAssistant (oasst1) message trees -> one conversation per tree.

oasst1 rows are single messages linked by parent_id; each prompt has several ranked
replies (rank 0 is the best). We rebuild each tree and follow the best-ranked reply
at every turn, which is the usual way to get one high-quality dialogue per tree.
Deleted messages and messages that failed review are dropped together with everything
below them; a message whose parent is missing (e.g. removed by a language filter
upstream) is an orphan and dropped the same way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

ROLE = {"prompter": "user", "assistant": "assistant"}


def flatten_tree_export(trees: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nested `*.trees.jsonl` export -> flat message rows with parent_id, like the hub dataset."""
    rows: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], parent_id: str | None, tree_id: str) -> None:
        row = {k: v for k, v in node.items() if k != "replies"}
        row.update(parent_id=parent_id, message_tree_id=tree_id)
        rows.append(row)
        for reply in node.get("replies") or []:
            walk(reply, node["message_id"], tree_id)

    for tree in trees:
        walk(tree["prompt"], None, tree.get("message_tree_id") or tree["prompt"]["message_id"])
    return rows


def _usable(row: dict[str, Any]) -> str | None:
    """Why a message cannot be used, or None."""
    if _flag(row.get("deleted")):
        return "deleted_messages"
    if _flag(row.get("review_result")) is False:
        return "failed_review_messages"
    text = row.get("text")  # text or null: convert rejects other types rather than train on str(5)
    if text is None or not text.strip():
        return "empty_messages"
    if row.get("role") not in ROLE:
        return "unknown_role_messages"
    return None


def _flag(value: Any) -> Any:
    """deleted / review_result: a bool, or (from a CSV file, read as text) "True" / "False"; "" is unknown."""
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return value


def _rank(value: Any) -> Any:
    """A reply's rank: a number, or (from a CSV file, read as text) its digits; "" or other text is unranked."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return value


def _rank_key(row: dict[str, Any], position: int) -> tuple:
    rank = _rank(row.get("rank"))
    # Unranked replies (a prompt with one reply, or ranking never done) come after ranked ones.
    return (rank is None or rank != rank, rank if rank is not None and rank == rank else 0, position)


def rows_to_conversations(
    rows: list[dict[str, Any]], languages: Iterable[str] = ()
) -> tuple[list[list[dict[str, str]]], Counter]:
    """Return one message list per usable tree, and counts of what was left out and why."""
    skipped: Counter = Counter()
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        reason = _usable(row)
        if reason:
            skipped[reason] += 1
        else:
            by_id[row["message_id"]] = row
    children: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    roots = []
    for position, row in enumerate(by_id.values()):
        parent = row.get("parent_id")
        if parent is None:
            roots.append(row)
        elif parent in by_id:
            children[parent].append((position, row))
        else:
            # Parent missing, deleted or failed review: the whole branch goes.
            skipped["orphan_messages"] += 1

    wanted = {lang.lower() for lang in languages}
    conversations = []
    for root in roots:
        if root["role"] != "prompter":
            skipped["trees_not_starting_with_a_prompt"] += 1
            continue
        if wanted and str(root.get("lang", "")).lower() not in wanted:
            skipped["trees_in_other_languages"] += 1
            continue
        path = [root]
        while True:
            replies = [(pos, r) for pos, r in children.get(path[-1]["message_id"], []) if r["role"] != path[-1]["role"]]
            if not replies:
                break
            path.append(min(replies, key=lambda item: _rank_key(item[1], item[0]))[1])
        if path[-1]["role"] == "prompter":
            path.pop()  # a prompt nobody answered teaches nothing
        if len(path) < 2:
            skipped["trees_without_a_reply"] += 1
            continue
        conversations.append([{"role": ROLE[r["role"]], "content": r["text"].strip()} for r in path])
    return conversations, skipped
