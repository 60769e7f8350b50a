"""What every front end records about a prompt's trees, so that any output can be drawn again.

The CLI (`<method>.jsonl`), the lm-eval samples (`filtered_resps`) and the Inspect log
(`output.metadata`) all write, per prompt:

- `branch_event_records`: every granted fork, with its round (sequence indexes and positions are
  per tree), entropy and threshold, the two tokens, and, given the tokenizer's `decode`, a few
  tokens of text around it: `before` (the shared prefix's last tokens), `parent` and `child`
  (each side's first tokens from the fork on). Token ids alone need the model's tokenizer to be
  read; the text is what `eager-eval show` and the report's drill-down print.
- `tree_records`: each round's tree: its cap (M, or the reallocated allotment), theta, whether
  it hit the cap, and its size.

`eager_eval.trees` reads them back. One function per record, shared by the three writers, so
the formats cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Sequence

from eager_eval.results import PromptResult, SequenceResult, _plain

Decode = Callable[[Sequence[int]], str]
"""Token ids -> text (special tokens dropped): a backend's or tokenizer's decode."""

CONTEXT_BEFORE = 8
"""Tokens of shared prefix shown before a fork."""
CONTEXT_AFTER = 6
"""Tokens shown on each side from the fork position on."""


def fork_context(parent: SequenceResult, child: SequenceResult, position: int,
                 decode: Decode) -> dict[str, str]:
    """The text around a fork at `position`: the prefix's last tokens, then each side's next."""
    return {
        "before": decode(parent.tokens[max(0, position - CONTEXT_BEFORE):position]),
        "parent": decode(parent.tokens[position:position + CONTEXT_AFTER]),
        "child": decode(child.tokens[position:position + CONTEXT_AFTER]),
    }


def branch_event_records(prompt: PromptResult, decode: Decode | None = None) -> list[dict[str, Any]]:
    """Every fork of every tree of `prompt`, JSON-ready (inf as 'inf'), in tree then fork order."""
    records = []
    for tree in prompt.trees:
        by_index = {s.index: s for s in tree.sequences}
        for event in tree.branch_events:
            record = {"round": tree.round, **_plain(asdict(event))}
            if decode is not None:
                record["context"] = fork_context(by_index[event.parent], by_index[event.child],
                                                 event.position, decode)
            records.append(record)
    return records


def tree_records(prompt: PromptResult) -> list[dict[str, Any]]:
    """Each round's tree of `prompt`: round, cap, theta, hit_cap, sequences, tokens."""
    return [_plain({"round": t.round, "cap": t.cap, "theta": t.theta, "hit_cap": t.hit_cap,
                    "n_sequences": len(t.sequences), "n_branch_events": len(t.branch_events),
                    "tokens_generated": sum(s.tokens_generated for s in t.sequences)})
            for t in prompt.trees]


__all__ = ["Decode", "fork_context", "branch_event_records", "tree_records", "CONTEXT_BEFORE",
           "CONTEXT_AFTER"]
