"""A loaded model that makes fresh backends: the one thing every front end builds.

The CLI, the lm-eval adapters and the Inspect provider all load a model once (`load_engine`)
and then, per run, ask it for a Backend configured by an EagerConfig and for prompt token ids.
Backends hold per-run state (rows, requests); engines hold the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from eager_eval.backends.base import Backend
from eager_eval.config import ConfigError, EagerConfig

BACKENDS = ("hf", "vllm")


class Engine(Protocol):
    name: str
    tokenizer: Any

    def new_backend(self, config: EagerConfig) -> Backend: ...

    def encode_prompt(self, prompt: str | Sequence[Mapping[str, str]], *, chat: bool = True,
                      enable_thinking: bool = True) -> list[int]: ...

    def info(self) -> dict[str, Any]: ...


def _encode(tokenizer: Any, prompt: str | Sequence[Mapping[str, str]], chat: bool,
            enable_thinking: bool) -> list[int]:
    if chat:
        from eager_eval.models import apply_chat

        return apply_chat(tokenizer, prompt, enable_thinking=enable_thinking)
    if not isinstance(prompt, str):
        prompt = "\n\n".join(m["content"] for m in prompt)
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


@dataclass
class HFEngine:
    """transformers weights; each run gets an HFBackend over them."""

    name: str
    model: Any
    tokenizer: Any
    max_rows: int = 64

    def new_backend(self, config: EagerConfig) -> Backend:
        from eager_eval.backends.hf import HFBackend

        return HFBackend(
            self.model, self.tokenizer, topk=config.topk, temperature=config.temperature,
            top_p=config.top_p, top_k=config.top_k, entropy_source=config.entropy_source.value,
            max_rows=self.max_rows, logprobs=config.is_branching,
        )

    def encode_prompt(self, prompt, *, chat: bool = True, enable_thinking: bool = True) -> list[int]:
        return _encode(self.tokenizer, prompt, chat, enable_thinking)

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

    def new_backend(self, config: EagerConfig) -> Backend:
        from eager_eval.backends.vllm import VLLMBackend

        return VLLMBackend.from_llm(self.llm, config)

    def encode_prompt(self, prompt, *, chat: bool = True, enable_thinking: bool = True) -> list[int]:
        return _encode(self.tokenizer, prompt, chat, enable_thinking)

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
        from eager_eval.models import load_model_and_tokenizer

        loaded, tokenizer = load_model_and_tokenizer(model, device=device or "cpu", dtype=dtype)
        return HFEngine(model, loaded, tokenizer, max_rows=max_rows)
    from eager_eval.backends.vllm import load_llm
    from eager_eval.models import converted_model_dir, resolve_model

    config = config or EagerConfig()
    path = converted_model_dir(resolve_model(model))  # GGUF and aliases: the cached conversion
    llm = load_llm(path, dtype=dtype, topk=config.topk,
                   entropy_source=config.entropy_source.value, **engine_kwargs)
    recorded = {"dtype": dtype or "auto", "topk": config.topk,
                "entropy_source": config.entropy_source.value, **engine_kwargs}
    return VLLMEngine(model, llm, llm.get_tokenizer(), recorded)
