"""Typed results of a run: what harnesses, metrics and reports read (no nested dicts)."""

from __future__ import annotations

import math
from array import array
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Iterable

from eager_eval.core.confidence import ConfidenceStats


class FinishReason(str, Enum):
    EOS = "eos"
    """The model emitted an end-of-sequence token."""
    STOP = "stop"
    """A stop string appeared (never inside an open thinking block)."""
    LENGTH = "length"
    """max_new_tokens was reached."""
    CONFIDENCE = "confidence"
    """Its group confidence fell below its prompt's stop bar (deepconf, confidence_stop): an
    abandoned trace, which never votes."""
    CONSENSUS = "consensus"
    """Stopped unfinished because its prompt's finished sequences reached the consensus
    (deepconf_consensus): it never votes."""

    @property
    def votes(self) -> bool:
        """A sequence that ended this way votes in the Cons@k-style votes (METHOD.md s. 8;
        docs/CONFIDENCE.md): one that was stopped for confidence or consensus does not."""
        return self not in NOT_VOTING


NOT_VOTING = (FinishReason.CONFIDENCE, FinishReason.CONSENSUS)
"""Ways to end that give no vote; `in` matches their names too, as a record stores them."""


@dataclass
class BranchEvent:
    """A granted fork: where, from which sequence, on which signal (indexes within the tree)."""

    position: int
    parent: int
    child: int
    entropy: float
    threshold: float
    parent_token: int
    child_token: int | None


class TokenIds(array):
    """A sequence's token ids, 4 bytes each (a list of ints costs 8 per pointer plus 28 per
    int object): what a run holds for every generated token until it returns. It compares
    equal to a list or tuple of the same ids, prints like one, and slices into TokenIds;
    `json_ready` writes it as a list."""

    __slots__ = ()

    def __new__(cls, values: Iterable[int] = ()) -> "TokenIds":
        return super().__new__(cls, "i", values)

    def __getitem__(self, index: Any) -> Any:
        item = array.__getitem__(self, index)
        return TokenIds(item) if isinstance(index, slice) else item

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and self.tolist() == list(other)
        return array.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  (mutable, like a list)

    def __repr__(self) -> str:
        return repr(self.tolist())

    def __copy__(self) -> "TokenIds":
        return TokenIds(self)

    def __deepcopy__(self, memo: Any) -> "TokenIds":
        return TokenIds(self)

    def __reduce__(self) -> Any:
        return TokenIds, (array("i", self),)


@dataclass
class SequenceResult:
    index: int
    """Creation order within its tree (0 = the root); stable across runs and resumes."""
    round: int
    """0 = EAGer-init / Full Parallel; r >= 1 = the r-th reallocation round."""
    parent: int | None
    """Index of the sequence it forked from, in the same tree; None for a root."""
    fork_position: int
    """Tokens before this position are shared with the parent (0 for a root)."""
    seed: int
    tokens: TokenIds
    """Its token ids (given as any sequence of ints; kept as TokenIds, 4 bytes each)."""
    text: str
    finish_reason: FinishReason
    confidence: ConfidenceStats | None = None
    """Its confidences (docs/CONFIDENCE.md); None when the run recorded none (confidence_k=0)."""

    def __post_init__(self) -> None:
        if type(self.tokens) is not TokenIds:
            self.tokens = TokenIds(self.tokens)

    @property
    def tokens_generated(self) -> int:
        """Tokens this sequence itself produced: a shared prefix counts once, at its owner."""
        return len(self.tokens) - self.fork_position


@dataclass
class TreeResult:
    """One EAGer-init (or Full Parallel) run of one prompt: a round's tree."""

    prompt_idx: int
    round: int
    cap: int
    theta: float
    sequences: list[SequenceResult]
    branch_events: list[BranchEvent]
    hit_cap: bool
    """The tree forked up to its cap, or wanted a fork the cap refused (EAGer-adapt's test)."""
    confidence_bar: float | None = None
    """The group confidence its sequences stopped below (deepconf's later sequences,
    confidence_stop's rounds); None: none of them could stop."""
    margin: float | None = None
    """The closest any of its entropy tests came to the threshold, |entropy - threshold| in
    nats (None: nothing was tested). A decision this close could flip under last-bit noise in
    the logits (another batch on a GPU: docs/ARCHITECTURE.md)."""

    @property
    def n_counted(self) -> int:
        """Sequences the budget pool counts: a confidence-stopped one went back to it."""
        return sum(s.finish_reason is not FinishReason.CONFIDENCE for s in self.sequences)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TreeResult":
        seqs = [SequenceResult(**{**s, "finish_reason": FinishReason(s["finish_reason"]),
                                  "confidence": ConfidenceStats.from_dict(s.get("confidence"))})
                for s in data["sequences"]]
        events = [BranchEvent(**e) for e in data["branch_events"]]
        theta = float(data["theta"])
        bar, margin = data.get("confidence_bar"), data.get("margin")
        return cls(data["prompt_idx"], data["round"], data["cap"], theta, seqs, events,
                   data["hit_cap"], None if bar is None else float(bar),
                   None if margin is None else float(margin))


@dataclass
class PromptResult:
    """Everything generated for one prompt, over all rounds."""

    prompt_idx: int
    trees: list[TreeResult] = field(default_factory=list)

    @property
    def sequences(self) -> list[SequenceResult]:
        return [s for t in self.trees for s in t.sequences]

    @property
    def branch_events(self) -> list[BranchEvent]:
        return [e for t in self.trees for e in t.branch_events]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.sequences]

    @property
    def n_sequences(self) -> int:
        return sum(len(t.sequences) for t in self.trees)

    @property
    def tokens_generated(self) -> int:
        """#T contribution: real tokens decoded, each shared prefix counted once."""
        return sum(s.tokens_generated for s in self.sequences)

    @property
    def tokens_in_outputs(self) -> int:
        """Tokens as the outputs hold them: a shared prefix counted in every sequence."""
        return sum(len(s.tokens) for s in self.sequences)


@dataclass
class RoundStats:
    round: int
    budget: int
    """Sequences still unspent when the round started (M*N - sum S_p)."""
    allotments: dict[int, int]
    """prompt_idx -> sequences allotted (the round's cap for that prompt's tree)."""
    sequences_spent: int
    tokens_generated: int


@dataclass
class RunResult:
    settings: dict[str, Any]
    prompts: list[PromptResult]
    rounds: list[RoundStats]
    wall_seconds: float = 0.0

    @property
    def tokens_generated(self) -> int:
        return sum(p.tokens_generated for p in self.prompts)

    @property
    def n_sequences(self) -> int:
        return sum(p.n_sequences for p in self.prompts)


def json_ready(value: Any) -> Any:
    """JSON-ready copy (for results and the prompt record alike): enums to their values, keys
    to strings, inf, -inf and nan to 'inf', '-inf' and 'nan' (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, array):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
