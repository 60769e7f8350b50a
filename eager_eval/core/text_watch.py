"""The two text rules the runner checks at every token: end of thinking and stop strings.

METHOD.md states both on text: a sequence never branches once the end-of-thinking marker's
text has appeared in what it generated, and a stop string ends it (never inside an open
thinking block; only text after the marker's token counts). A marker may be split over several
tokens or sit inside a merged one, so token ids alone cannot tell. Decoding a text tail at
every token (what the runner did first) costs ~10 us per token: more than a GPU engine's whole
budget per token at the paper's scale.

So there are two watches with one meaning:

- `ByteWatch` for tokenizers whose decode is the (lossy UTF-8) decoding of their tokens' bytes
  laid end to end (byte-level BPE: GPT-2, Llama 3, Qwen, SmolLM, gpt-oss): it keeps the last
  few bytes of each sequence and tests the marker and stop strings on those plus the new
  token's bytes. A valid UTF-8 string occurs in such a decode exactly when its bytes occur in
  the byte stream (UTF-8 resynchronises at every character start), so this is the text rule,
  incrementally, at a few hundred nanoseconds per token.
- `DecodeWatch` for every other tokenizer: the text of the last `WINDOW` tokens, decoded.

Each sequence's state lives on the sequence (`think_closed_at`, `opened_at`, two byte tails);
`restore(seq, t)` rebuilds it as it was before position t, for a fork that replaces the token
at t (top2) and for the child that shares the tokens before t.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence


class WatchedSeq(Protocol):
    tokens: list[int]
    think_closed_at: int | None
    """Position of the token that completed the end-of-thinking marker."""
    opened_at: int | None
    """Position of the token that completed a generated `<think>`; -1: the prompt opened it."""
    think_tail: bytes
    stop_tail: bytes


class StopSet:
    """One prompt's stop strings, ready for a watch."""

    __slots__ = ("texts", "encoded", "keep")

    def __init__(self, stops: Sequence[str]) -> None:
        self.texts = tuple(s for s in stops if s)
        self.encoded = tuple(s.encode() for s in self.texts)
        self.keep = max((len(s) for s in self.encoded), default=1) - 1
        """Bytes a tail must keep so that a stop string split over tokens is still seen."""

    def __bool__(self) -> bool:
        return bool(self.texts)


def think_start_of(think_end: str | None) -> str | None:
    """The opening tag of a closing marker (`</think>` -> `<think>`)."""
    return think_end.replace("/", "", 1) if think_end else None


class ByteWatch:
    """The text rules on byte tails (see the module docstring). `pieces[token]`: its bytes,
    empty for tokens the decode drops (special tokens)."""

    def __init__(self, pieces: Any, think_end: str | None) -> None:
        self.pieces = pieces
        self.end = think_end.encode() if think_end else None
        start = think_start_of(think_end)
        self.start = start.encode() if start else None
        self.keep = max(len(self.end), len(self.start)) - 1 if self.end else 0

    def observe(self, seq: WatchedSeq, t: int, stops: StopSet) -> bool:
        """Take in `seq.tokens[t]` (every position in order); True when a stop string ends at t."""
        piece = self.pieces[seq.tokens[t]]
        if self.end is not None and seq.think_closed_at is None:
            buf = seq.think_tail + piece
            if self.end in buf:
                seq.think_closed_at = t
                seq.stop_tail = b""  # stop strings count from the next token on
                return False
            if seq.opened_at is None and self.start in buf:
                seq.opened_at = t
            seq.think_tail = buf[-self.keep:] if self.keep else b""
            if seq.opened_at is not None:
                return False  # inside the thinking block: no stop strings
        if not stops.texts:
            return False
        buf = seq.stop_tail + piece
        for stop in stops.encoded:
            if stop in buf:
                return True
        seq.stop_tail = buf[-stops.keep:] if stops.keep else b""
        return False

    def restore(self, seq: WatchedSeq, t: int, stops: StopSet) -> None:
        """Make `seq`'s state what it was after position t - 1 (its tokens before t are kept)."""
        _forget_from(seq, t)
        seq.think_tail = self._tail(seq.tokens, 0, t, self.keep)
        start = 0 if seq.think_closed_at is None else seq.think_closed_at + 1
        seq.stop_tail = self._tail(seq.tokens, start, t, stops.keep)

    def _tail(self, tokens: list[int], start: int, stop: int, keep: int) -> bytes:
        """The last `keep` bytes of tokens[start:stop], read backwards until there are enough."""
        if keep <= 0:
            return b""
        parts: list[bytes] = []
        size = 0
        i = stop - 1
        while i >= start and size < keep:
            piece = self.pieces[tokens[i]]
            parts.append(piece)
            size += len(piece)
            i -= 1
        buf = b"".join(reversed(parts))
        return buf[-keep:]


class DecodeWatch:
    """The text rules on decoded tails, for tokenizers whose decode is not a concatenation."""

    WINDOW = 24
    """Tokens decoded at the tail (covers long markers and stop strings)."""

    def __init__(self, decode: Callable[[Sequence[int]], str], think_end: str | None) -> None:
        self.decode = decode
        self.end = think_end
        self.start = think_start_of(think_end)

    def observe(self, seq: WatchedSeq, t: int, stops: StopSet) -> bool:
        window = max(0, t - self.WINDOW)
        tail: str | None = None  # the decoded window, shared by the two checks
        if self.end is not None and seq.think_closed_at is None:
            tail = self.decode(seq.tokens[window: t + 1])
            if self.end in tail:
                seq.think_closed_at = t
            elif seq.opened_at is None and self.start in tail:
                seq.opened_at = t
        if not stops.texts or self._in_thinking(seq):
            return False
        start = window
        if seq.think_closed_at is not None:
            start = max(start, seq.think_closed_at + 1)  # only text after the marker's token
        if tail is None or start != window:
            tail = self.decode(seq.tokens[start: t + 1])
        return any(stop in tail for stop in stops.texts)

    def _in_thinking(self, seq: WatchedSeq) -> bool:
        return self.end is not None and seq.opened_at is not None and seq.think_closed_at is None

    def restore(self, seq: WatchedSeq, t: int, stops: StopSet) -> None:
        _forget_from(seq, t)


def _forget_from(seq: WatchedSeq, t: int) -> None:
    if seq.think_closed_at is not None and seq.think_closed_at >= t:
        seq.think_closed_at = None
    if seq.opened_at is not None and seq.opened_at >= t:
        seq.opened_at = None


TextWatch = ByteWatch | DecodeWatch


def text_watch(backend: Any, think_end: str | None) -> TextWatch:
    """A ByteWatch when the backend knows its tokens' bytes (`token_pieces`), else a DecodeWatch."""
    pieces = getattr(backend, "token_pieces", None)
    if pieces is not None:
        return ByteWatch(pieces, think_end)
    return DecodeWatch(backend.decode, think_end)
