"""The one prompt layer: what a front end has (a problem's text, chat messages, or a text a
harness already put in the chat template) -> the `PromptInput` the runner takes.

The CLI, the lm-eval models and the Inspect provider all build their prompts here, so the same
problem under the same settings is the same token ids everywhere, with the same stops, length
and thinking state (tests/test_frontends_agree.py runs one problem through all three).

One rule for special tokens:

- **chat** (`chat=auto` with a tokenizer that has a template, or `chat=true`): the messages go
  through the tokenizer's chat template with the generation prompt appended; the template
  writes every special token itself, so the text is tokenised with `add_special_tokens=False`
  (what `apply_chat_template(tokenize=True)` does). `enable_thinking` reaches only templates
  that read it (Qwen3-style).
- **plain** (`chat=false`, or `auto` without a template): the message contents joined by blank
  lines, tokenised with the tokenizer's own special tokens (`add_special_tokens=True`: a BOS
  where the model was trained with one).
- **rendered** (lm-eval's `--apply_chat_template` already ran the template through
  `EagerLM.apply_chat_template`): the text as it is, `add_special_tokens=False`.

Opens-thinking: a prompt whose text ends inside a thinking block (a template that appends
`<think>`) starts its sequences inside it, so stop strings wait for the end-of-thinking marker
(`PromptInput.opens_thinking`, the runner's rule). Read from the text the model sees.

One overlength policy: a prompt that leaves no position of the model's context to generate into
is refused (`PromptTooLongError`, naming the prompt, its length and the context); one that fits
but leaves less room than `max_new_tokens` gets one warning line (`room_warning`). Nothing is
cut: a cut prompt is another question.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Protocol, Sequence

from eager_eval.common.errors import UserError
from eager_eval.core.config import ConfigError
from eager_eval.core.tree import PromptInput

__all__ = [
    "ChatMode",
    "Prompt",
    "PromptSettings",
    "PromptEncoder",
    "PromptTooLongError",
    "Tokenizer",
    "check_prompt_fits",
    "opens_thinking",
    "room_warning",
    "chat_token_ids",
]

Message = Mapping[str, str]
"""{"role": "user" | "system" | "assistant", "content": text}."""


class Tokenizer(Protocol):
    """What the prompt layer uses of a tokenizer (transformers' PreTrainedTokenizer is one)."""

    chat_template: Any

    def __call__(self, text: str, *, add_special_tokens: bool) -> Mapping[str, Any]: ...

    def apply_chat_template(self, conversation: Sequence[Message], **kwargs: Any) -> Any: ...


class ChatMode(str, Enum):
    """Whether the tokenizer's chat template wraps the prompt."""

    AUTO = "auto"
    """The template when the tokenizer has one, else plain text (the default everywhere)."""
    ON = "true"
    """The template; a tokenizer without one is an error."""
    OFF = "false"
    """Plain text, even where a template exists (base-model style prompts)."""

    @classmethod
    def parse(cls, value: Any) -> "ChatMode":
        """True/False, 'auto'/'true'/'false' (any case) or a ChatMode; else a ConfigError."""
        if isinstance(value, ChatMode):
            return value
        if isinstance(value, bool):
            return cls.ON if value else cls.OFF
        text = str(value).strip().lower()
        for mode in cls:
            if text == mode.value:
                return mode
        raise ConfigError("chat", value, "auto, true or false")


@dataclass(frozen=True)
class PromptSettings:
    """How every prompt of a run is put to the model (the same names in every front end)."""

    chat: ChatMode = ChatMode.AUTO
    enable_thinking: bool = True
    """Passed to chat templates that read it (Qwen3-style); ignored by the others."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "chat", ChatMode.parse(self.chat))
        if not isinstance(self.enable_thinking, bool):
            raise ConfigError("enable_thinking", self.enable_thinking, "true or false")

    def to_dict(self) -> dict[str, Any]:
        return {"chat": self.chat.value, "enable_thinking": self.enable_thinking}


@dataclass(frozen=True)
class Prompt:
    """One prompt as a front end holds it, before any tokenizer."""

    content: str | tuple[Message, ...]
    """A problem's text (one user message) or the chat messages."""
    stop: tuple[str, ...] = ()
    """Stop strings (never applied inside an open thinking block)."""
    max_new_tokens: int | None = None
    """This prompt's length limit; None: the run's `max_new_tokens`."""
    rendered: bool = False
    """`content` is a text already in the chat template (lm-eval --apply_chat_template)."""

    @property
    def messages(self) -> list[dict[str, str]]:
        if isinstance(self.content, str):
            return [{"role": "user", "content": self.content}]
        return [dict(m) for m in self.content]

    @property
    def text(self) -> str:
        """The prompt's own words, before any template (what outputs record as its text)."""
        if isinstance(self.content, str):
            return self.content
        return "\n\n".join(m["content"] for m in self.content)


class PromptTooLongError(ValueError, UserError):
    """A prompt leaves no room to generate in the model's context."""


def check_prompt_fits(n_tokens: int, context: int | None, *, prompt: str, model: str) -> None:
    """A prompt must leave at least one position of the context to generate into: past its
    positions a model reads garbage, and the run's sequences would be graded anyway."""
    if context is not None and n_tokens >= context:
        raise PromptTooLongError(
            f"prompt {prompt} is {n_tokens} tokens, but {model}'s context holds {context}; "
            "shorten the prompt or use a model with a longer context")


def room_warning(prompt_lengths: Sequence[int], max_new_tokens: int, context: int | None,
                 model: str, option: str = "max_new_tokens") -> str | None:
    """One line when the longest prompt plus `max_new_tokens` passes the context (sequences
    that long read past it); None when everything fits or the context is unknown. `option`:
    how the front end spells the length (--max-new-tokens, max_gen_toks, --max-tokens)."""
    longest = max(prompt_lengths, default=0)
    if context is None or longest + max_new_tokens <= context:
        return None
    return (f"a prompt of {longest} tokens plus {option} {max_new_tokens} passes "
            f"{model}'s context of {context} tokens; sequences that long read past it (lower "
            f"{option} to at most {context - longest})")


def opens_thinking(text: str, think_end: str | None) -> bool:
    """Whether `text` ends inside a thinking block: its last `<think>` (the marker without its
    slash) comes after its last `</think>`."""
    if not think_end:
        return False
    think_start = think_end.replace("/", "", 1)
    return text.rfind(think_start) > text.rfind(think_end)


def _ids(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding (whose list() is its keys); 4.x a plain list
    if isinstance(encoded, Mapping) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    return [int(token) for token in encoded]


class PromptEncoder:
    """Prompts -> PromptInputs for one model: its tokenizer, its context, the run's settings."""

    def __init__(self, tokenizer: Tokenizer, settings: PromptSettings = PromptSettings(), *,
                 think_end: str | None = None, context_length: int | None = None,
                 model: str = "the model") -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.think_end = think_end
        self.context_length = context_length
        self.model = model
        if settings.chat is ChatMode.ON and not self.has_template:
            raise ConfigError("chat", "true", f"false or auto for {model}: its tokenizer has no "
                              "chat template")

    @classmethod
    def for_engine(cls, engine: Any, settings: PromptSettings = PromptSettings(), *,
                   think_end: str | None = None) -> "PromptEncoder":
        """The encoder of a loaded `engines.Engine` (its tokenizer, context and name)."""
        return cls(engine.tokenizer, settings, think_end=think_end,
                   context_length=getattr(engine, "context_length", None),
                   model=getattr(engine, "name", "the model"))

    @property
    def has_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def uses_template(self) -> bool:
        return self.settings.chat is ChatMode.ON or (self.settings.chat is ChatMode.AUTO
                                                     and self.has_template)

    def render(self, prompt: Prompt) -> str:
        """The text the model sees (the chat template applied where the rule says so)."""
        if prompt.rendered or not self.uses_template:
            return prompt.text
        return self.apply_template(prompt.messages)

    def apply_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The chat template over `messages` as text (also lm-eval's `apply_chat_template`)."""
        template = str(self.tokenizer.chat_template)
        extra = {"enable_thinking": self.settings.enable_thinking} if "enable_thinking" in template else {}
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
            tokenize=False, **extra)

    def token_ids(self, prompt: Prompt) -> tuple[str, list[int]]:
        """(the text the model sees, its token ids), by the module's special-token rule."""
        text = self.render(prompt)
        templated = prompt.rendered or self.uses_template
        ids = _ids(self.tokenizer(text, add_special_tokens=not templated))
        return text, ids

    def encode(self, prompt: Prompt, *, name: str = "") -> PromptInput:
        """The runner's input for `prompt`; `name` says which prompt in an error
        (PromptTooLongError when it fills the context, ValueError when it has no tokens)."""
        text, ids = self.token_ids(prompt)
        if not ids:
            raise ValueError(f"prompt {name} encodes to no tokens: give it some text".replace("  ", " "))
        check_prompt_fits(len(ids), self.context_length, prompt=name or "(unnamed)", model=self.model)
        return PromptInput(tuple(ids), tuple(prompt.stop), prompt.max_new_tokens,
                           opens_thinking(text, self.think_end))


def chat_token_ids(tokenizer: Tokenizer, content: str | Sequence[Message], *,
                   chat: ChatMode | bool | str = ChatMode.AUTO,
                   enable_thinking: bool = True) -> list[int]:
    """A prompt's token ids by the module's rule, for code that holds only a tokenizer
    (benchmarks and tests)."""
    body = content if isinstance(content, str) else tuple(content)
    encoder = PromptEncoder(tokenizer, PromptSettings(ChatMode.parse(chat), enable_thinking))
    return encoder.token_ids(Prompt(body))[1]
