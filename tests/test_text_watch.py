"""Token-level (byte tails) and text-level end-of-thinking / stop-string detection agree."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eager_eval.engines.tokens import token_pieces
from eager_eval.core.text_watch import ByteWatch, DecodeWatch, StopSet

# Pieces as a byte-level BPE splits text: the marker whole, in parts, or inside merged
# tokens; a two-byte character split over two tokens; special tokens that decode to nothing.
PIECES = [b"", b"", b"</", b"think", b">", b"</think>", b"k>", b"</th", b"ink>\n", b"The",
          b" answer", b"\xc3", b"\xa9", b"\xc3\xa9", b"<think>", b"<th", b"STOP", b"ST", b"OP",
          b" ", b"Question", b":", b"x", b"\n\n", b"Q", b"uestion:", b"\xe2\x80", b"\x94"]
STOPS = ("STOP", "Question:", "\n\n", "é—")
THINK_END = "</think>"


def decode(tokens) -> str:
    return b"".join(PIECES[t] for t in tokens).decode("utf-8", "replace")


class S:
    """A sequence as the watches see it."""

    def __init__(self, tokens=None, opened=False):
        self.tokens = list(tokens or [])
        self.think_closed_at = None
        self.opened_at = -1 if opened else None
        self.think_tail = b""
        self.stop_tail = b""


def text_rule(tokens, stops, think_end, opened):
    """METHOD.md on text, read off full decodes: (closed_at, opened_at, stop position)."""
    closed = opened_at = None if not opened else None
    opened_at = -1 if opened else None
    start_tag = think_end.replace("/", "", 1) if think_end else None
    for t in range(len(tokens)):
        text = decode(tokens[: t + 1])
        if think_end and closed is None:
            if think_end in text:
                closed = t
            elif opened_at is None and start_tag in text:
                opened_at = t
        in_thinking = think_end and opened_at is not None and closed is None
        if stops and not in_thinking and closed != t:
            begin = closed + 1 if closed is not None else 0
            if any(s in decode(tokens[begin: t + 1]) for s in stops):
                return closed, opened_at, t
    return closed, opened_at, None


def watch_run(watch, tokens, stops, opened):
    seq = S(opened=opened)
    stop_set = StopSet(stops)
    for t, token in enumerate(tokens):
        seq.tokens.append(token)
        if watch.observe(seq, t, stop_set):
            return seq.think_closed_at, seq.opened_at, t
    return seq.think_closed_at, seq.opened_at, None


# Marker and stop fragments drawn more often than the rest: splits are the hard cases.
FRAGMENTS = [2, 3, 4, 6, 7, 8, 11, 12, 14, 15, 17, 18, 24, 25, 26, 27]
token = st.one_of(st.sampled_from(FRAGMENTS), st.integers(0, len(PIECES) - 1))
streams = st.lists(token, min_size=1, max_size=40)
stop_sets = st.lists(st.sampled_from(STOPS), max_size=3).map(tuple)


@settings(max_examples=400, deadline=None)
@given(tokens=streams, stops=stop_sets, opened=st.booleans(),
       think_end=st.sampled_from([THINK_END, None]))
@example(tokens=[7, 8], stops=(), opened=False, think_end=THINK_END)  # </th + ink>
@example(tokens=[9, 7, 8, 17, 18], stops=("STOP",), opened=True, think_end=THINK_END)
@example(tokens=[11, 12, 26, 27], stops=("é—",), opened=False, think_end=None)
def test_byte_tails_find_what_the_text_rule_finds(tokens, stops, opened, think_end):
    expected = text_rule(tokens, stops, think_end, opened)
    assert watch_run(ByteWatch(PIECES, think_end), tokens, stops, opened) == expected
    assert watch_run(DecodeWatch(decode, think_end), tokens, stops, opened) == expected


@settings(max_examples=300, deadline=None)
@given(tokens=streams, stops=stop_sets, opened=st.booleans(), data=st.data())
def test_restore_rebuilds_the_state_before_a_replaced_token(tokens, stops, opened, data):
    """A top2 fork replaces the token at t (and a child starts from the tokens before t): the
    state restored there, then the new token, equals reading the new list from the start."""
    watch = ByteWatch(PIECES, THINK_END)
    stop_set = StopSet(stops)
    t = data.draw(st.integers(0, len(tokens) - 1))
    new = data.draw(st.integers(0, len(PIECES) - 1))
    seq = S(opened=opened)
    for i, token in enumerate(tokens[: t + 1]):
        seq.tokens.append(token)
        if watch.observe(seq, i, stop_set):
            return  # it ended before the fork: nothing to replace
    seq.tokens[t] = new
    watch.restore(seq, t, stop_set)
    replaced_hit = watch.observe(seq, t, stop_set)
    fresh = S(opened=opened)
    for i, token in enumerate(seq.tokens):
        fresh.tokens.append(token)
        fresh_hit = watch.observe(fresh, i, stop_set)
    assert live_state(seq) + (replaced_hit,) == live_state(fresh) + (fresh_hit,)


def live_state(seq):
    """The state that decides later tokens: the marker tail until it closes, the stop tail
    while outside thinking."""
    closed, opened = seq.think_closed_at, seq.opened_at
    in_thinking = opened is not None and closed is None
    return (closed, opened, seq.think_tail if closed is None else None,
            None if in_thinking else seq.stop_tail)


def _tiny_fast_tokenizer(decoder: str):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"<eos>": 0, "a": 1, "b": 2, "Ġ": 3, "Ġa": 4, "▁": 5, "▁b": 6, "Ã": 7, "©": 8}
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    if decoder == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def test_token_pieces_for_a_byte_level_tokenizer_and_none_for_others():
    byte_level = _tiny_fast_tokenizer("bytelevel")
    pieces = token_pieces(byte_level)
    assert pieces is not None
    assert pieces[0] == b"" and pieces[4] == b" a" and pieces[7] + pieces[8] == "é".encode()
    assert token_pieces(_tiny_fast_tokenizer("metaspace")) is None  # drops a leading space
