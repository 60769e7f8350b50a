"""A loaded model that makes fresh backends: the one thing every front end builds.

The CLI, the lm-eval adapters and the Inspect provider all load a model once (`load_engine`)
and then, per run, ask it for a Backend configured by an EagerConfig and for prompt token ids.
Backends hold per-run state (rows, requests); engines hold the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from eager_eval.core.backend import Backend
from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.pipeline.prompts import chat_token_ids
from eager_eval.common.settings import positive_int

BACKENDS = ("hf", "vllm")


class Engine(Protocol):
    name: str
    tokenizer: Any

    def new_backend(self, config: EagerConfig) -> Backend:
        """A backend for one run; raises ConfigError first if `verify` does."""
        ...

    def verify(self, config: EagerConfig) -> None:
        """The settings' checks that need this model (`EagerConfig.verify_model`)."""
        ...

    context_length: int | None
    """Positions the model reads (prompt + generation); None when unknown."""

    def encode_prompt(self, prompt: str | Sequence[Mapping[str, str]], *, chat: bool = True,
                      enable_thinking: bool = True) -> list[int]:
        """Token ids by the prompt layer's rule (`prompts.chat_token_ids`); front ends use a
        `prompts.PromptEncoder`, which also sets stops, length and opens-thinking."""
        ...

    def info(self) -> dict[str, Any]: ...


def check_max_rows(value: Any) -> int:
    """`max_rows` (hf): most sequences decoded together; checked before a model loads."""
    return positive_int(value, "max_rows", "(most sequences decoded together)")


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Where transformers configs keep the context length (the first present wins)."""


def _verify(config: EagerConfig, vocab_size: int | None, tokenizer: Any) -> None:
    config.verify_model(
        vocab_size=vocab_size,
        encode=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class HFEngine:
    """transformers weights; each run gets an HFBackend over them."""

    name: str
    model: Any
    tokenizer: Any
    max_rows: int = 64

    def __post_init__(self) -> None:
        check_max_rows(self.max_rows)

    @property
    def vocab_size(self) -> int | None:
        """Rows of the output layer: what the entropy's top-K and top_k choose among."""
        layer = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if layer is not None and getattr(layer, "weight", None) is not None:
            return int(layer.weight.shape[0])
        return getattr(self.model.config, "vocab_size", None)

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        return next((int(getattr(config, k)) for k in _CONTEXT_KEYS
                     if isinstance(getattr(config, k, None), int)), None)

    def verify(self, config: EagerConfig) -> None:
        _verify(config, self.vocab_size, self.tokenizer)

    def new_backend(self, config: EagerConfig) -> Backend:
        from eager_eval.engines.hf import HFBackend

        self.verify(config)
        return HFBackend(self.model, self.tokenizer, config.sampling, max_rows=self.max_rows)

    def encode_prompt(self, prompt, *, chat: bool = True, enable_thinking: bool = True) -> list[int]:
        return chat_token_ids(self.tokenizer, prompt, chat=chat, enable_thinking=enable_thinking)

    def info(self) -> dict[str, Any]:
        return {"backend": "hf", "model": self.name, "device": str(self.model.device),
                "dtype": str(self.model.dtype).replace("torch.", ""), "max_rows": self.max_rows}


@dataclass
class VLLMEngine:
    """A vllm.LLM; each run gets a VLLMBackend driving its engine."""

    name: str
    llm: Any
    tokenizer: Any
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    """What the engine was built with beyond the defaults (recorded with the results)."""

    @property
    def _model_config(self) -> Any:
        return getattr(getattr(self.llm, "llm_engine", None), "model_config", None)

    @property
    def vocab_size(self) -> int | None:
        model_config = self._model_config
        return model_config.get_vocab_size() if model_config is not None else None

    @property
    def context_length(self) -> int | None:
        return getattr(self._model_config, "max_model_len", None)

    def verify(self, config: EagerConfig) -> None:
        _verify(config, self.vocab_size, self.tokenizer)

    def new_backend(self, config: EagerConfig) -> Backend:
        from eager_eval.engines.vllm import VLLMBackend

        self.verify(config)
        return VLLMBackend.from_llm(self.llm, config)

    def encode_prompt(self, prompt, *, chat: bool = True, enable_thinking: bool = True) -> list[int]:
        return chat_token_ids(self.tokenizer, prompt, chat=chat, enable_thinking=enable_thinking)

    def info(self) -> dict[str, Any]:
        return {"backend": "vllm", "model": self.name, **dict(self.engine_args)}


def load_engine(model: str, *, backend: str = "hf", device: str | None = None,
                dtype: str | None = None, max_rows: int = 64, config: EagerConfig | None = None,
                **engine_kwargs: Any) -> Engine:
    """Load `model` (hub id, local dir, .gguf file or an alias like smollm2-135m) once.

    `config` matters for vLLM only: its top-K and entropy source fix the engine's logprob
    limit and mode at start-up.
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, f"one of: {', '.join(BACKENDS)}")
    if backend == "hf":
        if engine_kwargs:
            raise ConfigError("engine option", sorted(engine_kwargs)[0],
                              "one the hf backend knows (device, dtype, max_rows)")
        check_max_rows(max_rows)
        from eager_eval.engines.models import load_model_and_tokenizer

        loaded, tokenizer = load_model_and_tokenizer(model, device=device or "cpu", dtype=dtype)
        return HFEngine(model, loaded, tokenizer, max_rows=max_rows)
    from eager_eval.engines.vllm import load_llm
    from eager_eval.engines.models import converted_model_dir, resolve_model

    config = config or EagerConfig()
    path = converted_model_dir(resolve_model(model))  # GGUF and aliases: the cached conversion
    llm = load_llm(path, dtype=dtype, entropy_k=config.entropy_k,
                   entropy_source=config.entropy_source.value, **engine_kwargs)
    recorded = {"dtype": dtype or "auto", "entropy_k": config.entropy_k,
                "entropy_source": config.entropy_source.value, **engine_kwargs}
    return VLLMEngine(model, llm, llm.get_tokenizer(), recorded)
