"""The one prompt layer (eager_eval/pipeline/prompts.py): one rule for chat and plain text, special tokens
the same way everywhere, opens-thinking, one overlength policy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from scripting import CharTokenizer

from eager_eval.core.config import ConfigError
from eager_eval.pipeline.prompts import (
    ChatMode,
    Prompt,
    PromptEncoder,
    PromptSettings,
    PromptTooLongError,
    chat_token_ids,
    opens_thinking,
    room_warning,
)

BOS = 1


class BosTokenizer(CharTokenizer):
    """A tokenizer that adds a BOS when asked for its special tokens (as Llama's does)."""

    def __call__(self, text: str, *, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = super().__call__(text, add_special_tokens=add_special_tokens)["input_ids"]
        return {"input_ids": ([BOS] if add_special_tokens else []) + ids}


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_chat_auto_uses_the_template_and_adds_no_special_tokens_of_its_own():
    encoder = PromptEncoder(BosTokenizer(template=True), think_end="</think>")
    prompt = encoder.encode(Prompt("2+2?", stop=("Q:",), max_new_tokens=7))
    assert prompt.tokens == tuple(ids("<user>2+2?</user><assistant>"))  # no BOS: the template's
    assert (prompt.stop, prompt.max_new_tokens, prompt.opens_thinking) == (("Q:",), 7, False)


def test_plain_text_gets_the_tokenizer_s_special_tokens():
    """Without a template (or chat=false) the tokenizer adds what it was trained with: the one
    rule for every front end (the CLI's --no-chat used to add none, the chat path did)."""
    for encoder in (PromptEncoder(BosTokenizer()),
                    PromptEncoder(BosTokenizer(template=True), PromptSettings(ChatMode.OFF))):
        assert encoder.encode(Prompt("hi")).tokens == (BOS, *ids("hi"))
    messages = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})
    assert PromptEncoder(BosTokenizer()).encode(Prompt(messages)).tokens == (
        BOS, *ids("be brief\n\nhi"))


def test_a_text_the_harness_already_templated_is_tokenised_as_it_is():
    encoder = PromptEncoder(BosTokenizer(template=True))
    rendered = encoder.apply_template([{"role": "user", "content": "x"}])
    assert encoder.encode(Prompt(rendered, rendered=True)).tokens == tuple(ids(rendered))


def test_chat_true_needs_a_template_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="chat must be false or auto for m: its tokenizer has no"):
        PromptEncoder(CharTokenizer(), PromptSettings(ChatMode.ON), model="m")
    with pytest.raises(ConfigError, match="chat must be auto, true or false, got 'maybe'"):
        PromptSettings("maybe")
    assert [ChatMode.parse(v) for v in (True, False, "AUTO", " true ")] == [
        ChatMode.ON, ChatMode.OFF, ChatMode.AUTO, ChatMode.ON]


def test_a_template_that_opens_thinking_is_seen_and_enable_thinking_reaches_it():
    thinking = CharTokenizer(template=True, thinking=True)
    on = PromptEncoder(thinking, think_end="</think>").encode(Prompt("q"))
    assert on.opens_thinking and on.tokens[-len("<think>"):] == tuple(ids("<think>"))
    off = PromptEncoder(thinking, PromptSettings(enable_thinking=False), think_end="</think>")
    assert not off.encode(Prompt("q")).opens_thinking  # the template left it closed
    no_marker = PromptEncoder(thinking, think_end=None).encode(Prompt("q"))
    assert not no_marker.opens_thinking  # a model without thinking: nothing is open


def test_opens_thinking_reads_the_last_marker():
    assert opens_thinking("<|im_start|>assistant\n<think>\n", "</think>")
    assert not opens_thinking("<think>x</think> answer", "</think>")
    assert not opens_thinking("plain", "</think>")
    assert not opens_thinking("<think>", None)


def test_one_overlength_policy_refuse_what_fills_the_context_warn_what_may_pass_it():
    encoder = PromptEncoder(CharTokenizer(), context_length=10, model="tiny")
    assert encoder.encode(Prompt("123456789")).tokens  # 9 tokens leave one position
    with pytest.raises(PromptTooLongError, match="prompt 'p7' is 10 tokens, but tiny's context "
                                                  "holds 10"):
        encoder.encode(Prompt("1234567890"), name="'p7'")
    with pytest.raises(ValueError, match="encodes to no tokens"):
        encoder.encode(Prompt(""))
    line = room_warning([4, 6], 8, 10, "tiny", "--max-new-tokens")
    assert line == ("a prompt of 6 tokens plus --max-new-tokens 8 passes tiny's context of 10 "
                    "tokens; sequences that long read past it (lower --max-new-tokens to at "
                    "most 4)")
    assert room_warning([4], 6, 10, "tiny") is None and room_warning([4], 99, None, "t") is None


def test_token_ids_for_code_that_holds_only_a_tokenizer_follow_the_same_rule():
    assert chat_token_ids(BosTokenizer(template=True), "hi") == ids("<user>hi</user><assistant>")
    assert chat_token_ids(BosTokenizer(template=True), "hi", chat=False) == [BOS, *ids("hi")]


def test_the_layer_and_the_record_import_no_engine_or_harness():
    code = ("import sys, eager_eval.pipeline.prompts, eager_eval.pipeline.record, eager_eval.common.settings, "
            "eager_eval.pipeline.metrics\n"
            "heavy = [m for m in ('torch', 'transformers', 'vllm', 'lm_eval', 'inspect_ai', "
            "'sympy', 'math_verify') if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
