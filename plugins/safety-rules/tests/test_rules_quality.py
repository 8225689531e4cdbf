"""Precision and recall of inline::rules per category on labelled.jsonl (see make_labelled.py).

Run with `-s` to see the table. Asserted: no finding at all on a negative example, recall of at least
RECALL_FLOOR per category (and 0.95 overall), precision of at least 0.95 per category.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lamina_safety_rules.scanner import Scanner

DATA = Path(__file__).with_name("labelled.jsonl")
RECALL_FLOOR = 0.85


def load() -> list[tuple[str, set[str]]]:
    return [(row["text"], set(row["categories"])) for row in map(json.loads, DATA.read_text().splitlines())]


def evaluate() -> tuple[dict[str, Counter[str]], list[tuple[str, set[str], set[str]]]]:
    scanner = Scanner()
    counts: dict[str, Counter[str]] = {}
    mistakes = []
    for text, expected in load():
        found = {f.category for f in scanner.scan(text)}
        for category in expected | found:
            tally = counts.setdefault(category, Counter())
            tally["tp" if category in expected and category in found else "fn" if category in expected else "fp"] += 1
        if found != expected:
            mistakes.append((text, expected, found))
    return counts, mistakes


def table(counts: dict[str, Counter[str]]) -> str:
    lines = [f"{'category':<22} {'support':>7} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}"]
    for category in sorted(counts):
        c = counts[category]
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        lines.append(
            f"{category:<22} {c['tp'] + c['fn']:>7} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4} {precision:>9.3f} {recall:>7.3f}"
        )
    return "\n".join(lines)


def test_the_labelled_set_is_big_enough() -> None:
    rows = load()
    assert sum(1 for _, c in rows if c) >= 200
    assert sum(1 for _, c in rows if not c) >= 200


def test_precision_and_recall_per_category() -> None:
    counts, mistakes = evaluate()
    print("\n" + table(counts))
    for text, expected, found in mistakes:
        print(f"MISMATCH expected={sorted(expected)} found={sorted(found)}: {text[:100]!r}")
    false_alarms = [(text, found) for text, expected, found in mistakes if not expected]
    assert not false_alarms, f"findings on negative examples: {false_alarms}"
    total = Counter()
    for category, c in counts.items():
        total.update(c)
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        assert recall >= RECALL_FLOOR, f"{category}: recall {recall:.3f}"
        assert precision >= 0.95, f"{category}: precision {precision:.3f}"
    assert total["tp"] / (total["tp"] + total["fn"]) >= 0.95
