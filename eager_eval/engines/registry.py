"""Engines: one options object, one registry, one way to load a model.

Every front end (CLI, lm-eval models, Inspect provider, sweep) describes how to load a model
with one frozen `EngineOptions` (engine name, device, dtype, max_rows, threads, engine args,
replicas), validated once at construction, and loads it with `load_engine(model, options,
config)`, which looks the engine up in `ENGINES` (name -> a lazy "module:function" target, so
torch or vLLM load only when that engine is used; with replicas > 1, N of them on Ray:
replicas.py). An `Engine` holds the weights; each run asks it for a fresh `Backend`
(`new_backend(config)`), the core's only seam.

Adding an engine is one module with a `load(model, options, config) -> Engine` function and
one `EngineSpec` line below (docs/ARCHITECTURE.md has the recipe).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Protocol

from eager_eval.common.settings import SettingError, parse_value, positive_int
from eager_eval.core.backend import Backend
from eager_eval.core.config import EagerConfig, is_auto
from eager_eval.engines.devices import DTYPES, dtype_name

ConfigError = SettingError

AUTO = "auto"


class Engine(Protocol):
    """A loaded model that makes a fresh Backend per run."""

    name: str
    tokenizer: Any

    def new_backend(self, config: EagerConfig) -> Backend:
        """A backend for one run; raises ConfigError first if `verify` does. Engine replicas
        (replicas.py) give a FleetFactory instead, which `runner.run` takes in its place."""
        ...

    def verify(self, config: EagerConfig) -> None:
        """The settings' checks that need this model (`EagerConfig.verify_model`)."""
        ...

    context_length: int | None
    """Positions the model reads (prompt + generation); None when unknown."""

    def info(self) -> dict[str, Any]:
        """What ran, recorded with the results (`engine` in results.json): the engine, the
        resolved device and dtype, the batch size it chose."""
        ...


@dataclass(frozen=True)
class EngineSpec:
    """One registered engine."""

    name: str
    target: str
    """"module:function" of its `load(model, options, config) -> Engine` (imported lazily)."""
    description: str
    options: frozenset[str]
    """The EngineOptions fields it reads (the others are ignored: lm-eval hands every model a
    device); engine_args given to an engine that takes none are an error."""
    check_model: str = "eager_eval.engines.models:resolve_model"
    """"module:function" that checks a model name before anything loads (no torch): raises a
    UserError naming what is accepted."""


ENGINES: dict[str, EngineSpec] = {}
"""Engine name -> spec: what `--backend`, `-M backend=` and lm-eval's model classes choose."""


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add an engine; a name registered twice with another target is an error naming both."""
    known = ENGINES.get(spec.name)
    if known is not None and known.target != spec.target:
        raise ValueError(f"engine {spec.name!r} is registered twice ({known.target} and "
                         f"{spec.target})")
    ENGINES[spec.name] = spec
    return spec


register_engine(EngineSpec(
    "hf", "eager_eval.engines.hf_engine:load",
    "transformers, on a CPU, CUDA or MPS device", frozenset({"device", "dtype", "max_rows", "threads"})))
register_engine(EngineSpec(
    "vllm", "eager_eval.engines.vllm:load",
    "a vLLM engine (docs/VLLM.md)", frozenset({"dtype", "engine_args"})))
register_engine(EngineSpec(
    "scripted", "eager_eval.engines.scripted:load",
    "a scripted engine over a character tokenizer (tests, demos of the pipeline; no weights)",
    frozenset(), check_model="eager_eval.engines.scripted:check_model"))


def engine_names() -> list[str]:
    return list(ENGINES)


def _max_rows(value: Any) -> int | str:
    """`auto`, or an integer >= 1 (the message every front end shows for a bad one)."""
    if is_auto(value):
        return AUTO
    return positive_int(value, "max_rows", "(most sequences decoded together)")


def _check_device_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("device", value, "auto, cpu, cuda, cuda:N or mps")
    return value.strip().lower()


@dataclass(frozen=True)
class EngineOptions:
    """How to load a model: the same options, the same checks, in every front end."""

    backend: str = "hf"
    """The engine (`ENGINES`): hf | vllm | scripted."""
    device: str = AUTO
    """hf: auto (CUDA when available, then MPS, then CPU) | cpu | cuda | cuda:N | mps."""
    dtype: str | None = None
    """auto (None) | float32 | bfloat16 | float16; auto = float32 on CPU, bf16 on CUDA."""
    max_rows: int | str = AUTO
    """hf: most live sequences decoded together (each tree reserves its cap); auto: as many
    as the device's free memory holds at prompt + max_new_tokens (engines/hf_memory.py)."""
    threads: int | str | None = None
    """hf on a CPU: torch threads; auto = the CPUs other processes leave free; None: torch's
    own default (the CLI's default is auto)."""
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    """vllm: keyword arguments for the engine (gpu_memory_utilization, tensor_parallel_size...)."""
    replicas: int = 1
    """Engine replicas, each a Ray actor with its own engine (its own GPU, or tensor-parallel
    GPUs), under one budget pool (engines/replicas.py, docs/SCALE.md). Never changes a tree."""

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        backend = str(self.backend).strip().lower() if isinstance(self.backend, str) else self.backend
        if backend not in ENGINES:
            raise ConfigError("backend", self.backend, f"one of: {', '.join(ENGINES)}")
        set_("backend", backend)
        set_("device", _check_device_text(self.device))
        set_("dtype", dtype_name(self.dtype))
        set_("max_rows", _max_rows(self.max_rows))
        if self.threads is not None and not is_auto(self.threads):
            set_("threads", positive_int(self.threads, "threads", "(CPU threads for torch), or auto"))
        elif isinstance(self.threads, str):
            set_("threads", AUTO)
        if not isinstance(self.engine_args, Mapping):
            raise ConfigError("engine_args", self.engine_args, "a mapping of engine keyword arguments")
        set_("engine_args", dict(self.engine_args))
        set_("replicas", positive_int(self.replicas, "replicas",
                                      "(engine replicas on Ray, one budget pool over them)"))
        if self.engine_args and "engine_args" not in self.spec.options:
            raise ConfigError("engine_args", self.engine_args, (
                f"used with --backend vllm (the {self.backend} backend takes "
                f"{', '.join(sorted(self.spec.options)) or 'no engine options'})"))

    @property
    def spec(self) -> EngineSpec:
        return ENGINES[self.backend]

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "EngineOptions":
        """From front-end strings ('cuda', '64', '{k: v}'); names must be EngineOptions'."""
        return cls(**{k: parse_value(v) if k != "engine_args" else v for k, v in values.items()})

    def replace(self, **changes: Any) -> "EngineOptions":
        import dataclasses

        return dataclasses.replace(self, **changes)

    def resolved_device(self) -> str:
        """The device that will run (auto resolved; imports torch, loads nothing); a device
        that is not on this machine is a DeviceError naming one that is."""
        if "device" not in self.spec.options:
            return self.backend  # the engine places itself (vLLM: CUDA_VISIBLE_DEVICES)
        from eager_eval.engines.devices import check_device, resolve_device

        return str(check_device(resolve_device(self.device)))

    def check(self, model: str | None = None) -> None:
        """What can be checked before a model loads: the model name (and a GGUF file's
        magic), the device exists (dtype and the rest were checked at construction). With
        replicas, the devices are the Ray cluster's: checked when the replicas start."""
        from eager_eval.engines.replicas import check_replicas, check_single_launch

        check_single_launch()
        if model is not None:
            _target(self.spec.check_model)(model)
        if self.replicas > 1:
            check_replicas(self)  # Ray installed, RAY_ADDRESS answers, the GPUs are there
        else:
            self.resolved_device()

    def fingerprint(self) -> dict[str, Any]:
        """What of these options changes the trees (a resume or trees=DIR must match it):
        not `replicas` (a tree is the same on any replica) nor the rows and threads."""
        if "device" not in self.spec.options:
            return {"backend": self.backend, "dtype": self.dtype}
        if self.replicas > 1:  # the cluster's devices: auto as this machine resolves it
            from eager_eval.engines.devices import resolve_device

            return {"backend": self.backend, "dtype": self.dtype,
                    "device": resolve_device(self.device).split(":")[0]}
        device = self.resolved_device().split(":")[0]
        return {"backend": self.backend, "dtype": self.dtype, "device": device}


def load_engine(model: str, options: EngineOptions | None = None,
                config: EagerConfig | None = None, **option_values: Any) -> Engine:
    """Load `model` (hub id, local dir, .gguf file or an alias like smollm2-135m) once, with the
    engine `options` name. `config` matters for vLLM only: its top-K and entropy source fix the
    engine's logprob limit and mode at start-up. `option_values` build the options instead
    (`load_engine("smollm2-135m", device="cpu")`)."""
    if options is None:
        options = EngineOptions(**option_values)
    elif option_values:
        raise TypeError("pass options or option keywords, not both")
    from eager_eval.engines.replicas import check_single_launch, load_replicas

    check_single_launch()
    if options.replicas > 1:
        return load_replicas(model, options, config or EagerConfig(), load_one_engine)
    return load_one_engine(model, options, config or EagerConfig())


def load_one_engine(model: str, options: EngineOptions, config: EagerConfig) -> Engine:
    """One engine in this process (what each replica runs)."""
    return _target(options.spec.target)(model, options, config)


def _target(target: str) -> Callable[..., Any]:
    """The function a "module:function" string names (imported now)."""
    module_name, _, function = target.partition(":")
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    return getattr(module, function)


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Where transformers configs keep the context length (the first present wins)."""


def verify_on(config: EagerConfig, vocab_size: int | None, tokenizer: Any) -> None:
    """`config.verify_model` with a tokenizer's encode (every engine's `verify`)."""
    config.verify_model(
        vocab_size=vocab_size,
        encode=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])


__all__ = ["DTYPES", "Engine", "EngineSpec", "ENGINES", "register_engine", "engine_names",
           "EngineOptions", "dtype_name", "load_engine", "CONTEXT_KEYS", "verify_on"]
