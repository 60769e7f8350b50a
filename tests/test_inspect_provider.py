"""Pins eager_eval/frontends/inspect/provider.py (the `eager` provider) and its solver/scorer.

Everything here runs on a ScriptedEngine (the ScriptedBackend behind the Engine seam, passed
to the provider as `engine=`), in-process: no torch, no model, a few seconds in all. The
subprocess runs of `inspect eval` on real weights are in test_inspect_tasks.py (slow).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import anyio
import pytest
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model
from inspect_ai.solver import generate
from inspect_ai.tool import ToolInfo
from scripting import EOS, flat, peaked

from eager_eval.pipeline.answers import AnswerType
from eager_eval.engines.scripted import VOCAB as SCRIPTED_VOCAB
from eager_eval.engines.scripted import ScriptedBackend, ScriptedEngine, mixed_script
from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.frontends.inspect.provider import (
    MODEL_INFO_LOOKUP_API_KEY,
    EagerModelAPI,
    Label,
)
from eager_eval.frontends.inspect.scorers import eager_generate, eager_scorer
from eager_eval.pipeline.metrics import score_run
from eager_eval.pipeline.record import PromptRecord
from eager_eval.engines.models import ModelNotFoundError
from eager_eval.core.runner import PromptInput, run

VOCAB = dict(SCRIPTED_VOCAB)
SETTINGS = dict(theta=0.9, max_seqs=4, percentile=None, think_end=None, seed=5)
"""EAGer settings of most tests (-M in a real run): small M, a fixed threshold."""


def provider(engine: ScriptedEngine | None = None, **model_args) -> EagerModelAPI:
    return EagerModelAPI("scripted", engine=engine or ScriptedEngine(mixed_script()),
                         **{**SETTINGS, **model_args})


async def generate_all(api: EagerModelAPI, texts: list[str], config: GenerateConfig | None = None,
                       return_exceptions: bool = False):
    config = config or GenerateConfig(max_tokens=30)
    calls = [api.generate([ChatMessageUser(content=t)], [], "auto", config) for t in texts]
    return await asyncio.gather(*calls, return_exceptions=return_exceptions)


def core_run(texts: list[str], config: EagerConfig, script, verifier=None):
    """The core's run on the same prompts, ordered as the provider orders a batch (by tokens)."""
    tokens = sorted(tuple(ord(c) for c in t) for t in texts)
    prompts = [PromptInput(t, (), config.max_new_tokens) for t in tokens]
    backend = ScriptedBackend(script, greedy=config.temperature == 0, vocab=VOCAB)
    return run(prompts, backend, config, verifier=verifier)


def question_task(texts: list[str], targets: list[str] | None = None, solver=None) -> Task:
    targets = targets or ["0"] * len(texts)
    samples = [Sample(id=i, input=t, target=g) for i, (t, g) in enumerate(zip(texts, targets))]
    return Task(dataset=MemoryDataset(samples, name="scripted"),
                solver=solver or eager_generate(AnswerType.MATH),
                scorer=eager_scorer(AnswerType.MATH))


def run_eval(task: Task, model, tmp_path, **kwargs):
    (log,) = inspect_eval(task, model=model, log_dir=str(tmp_path), display="none",
                          max_tokens=30, **kwargs)
    return log


# --- registration and options ----------------------------------------------------------------


def test_registry_and_provider_modules_import_no_torch():
    code = ("import sys, eager_eval.frontends.inspect.registry, eager_eval.frontends.inspect.provider, "
            "eager_eval.frontends.inspect.scorers; "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_registers_the_eager_provider():
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False)
    assert isinstance(model.api, EagerModelAPI)
    assert str(model) == "eager/scripted"


def test_unknown_option_names_the_closest_and_lists_accepted():
    with pytest.raises(ConfigError) as err:
        provider(thta=2.0)
    message = str(err.value)
    assert "unknown -M option of the eager provider 'thta'" in message
    assert "did you mean 'theta'" in message
    for name in ("batch_window", "batch_size", "backend", "device", "dtype", "max_rows", "max_seqs", "mode"):
        assert name in message


@pytest.mark.parametrize("window", [0, -1.0, "inf", "soon"])
def test_batch_window_must_be_a_positive_finite_number(window):
    with pytest.raises(ConfigError, match="batch_window must be a finite number of seconds > 0"):
        provider(batch_window=window)


@pytest.mark.parametrize("args, name", [
    ({"batch_size": 0}, "batch_size"), ({"max_rows": 0}, "max_rows"),
    ({"backend": "tgi"}, "backend"), ({"theta": -1}, "theta"), ({"mode": "beam"}, "mode"),
])
def test_bad_option_values_name_the_option(args, name):
    with pytest.raises(ConfigError) as err:
        provider(**args)
    assert err.value.parameter == name


def test_unknown_model_name_is_a_clear_error_before_anything_loads():
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-model'"):
        get_model("eager/no-such-model", memoize=False)


def test_model_info_lookup_instance_loads_nothing():
    api = EagerModelAPI("no-such-model", api_key=MODEL_INFO_LOOKUP_API_KEY)
    assert api.engine is None and api.canonical_name() == "no-such-model"


def test_generate_config_maps_onto_settings_and_m_options_win(caplog):
    config = GenerateConfig(max_tokens=7, temperature=0.3, top_p=0.9, top_k=5, seed=3)
    settings = provider().settings_for(config)
    assert (settings.max_new_tokens, settings.temperature, settings.top_p, settings.top_k,
            settings.seed) == (7, 0.3, 0.9, 5, 5)  # -M seed=5 (SETTINGS) beats seed=3
    assert "-M seed=5 overrides GenerateConfig seed=3" in caplog.text
    assert provider(temperature=1.0).settings_for(config).temperature == 1.0
    assert provider().settings_for(GenerateConfig()).max_new_tokens == EagerConfig().max_new_tokens
    request = provider().request_for([ChatMessageUser(content="q")], [],
                                     GenerateConfig(stop_seqs=["\n\n", "Question:"]))
    assert request.stop == ("\n\n", "Question:")


def test_tools_are_refused_per_call():
    tool = ToolInfo(name="calc", description="adds")
    with pytest.raises(ValueError, match="does not support tool use"):
        provider().request_for([ChatMessageUser(content="q")], [tool], GenerateConfig())


# --- outputs ---------------------------------------------------------------------------------


def test_output_holds_every_sequence_tokens_once_and_the_statistics():
    (output,) = asyncio.run(generate_all(provider(batch_window=0.01), ["q1"]))
    record = PromptRecord.from_dict(output.metadata)  # the one record (docs/FORMAT.md)
    assert record.n_sequences == len(output.choices) > 1
    assert output.usage.output_tokens == record.tokens_generated  # #T: prefixes once
    assert record.tokens_generated < record.tokens_in_outputs
    assert output.usage.input_tokens == 2
    assert len(record.forks) == record.n_sequences - 1
    assert record.settings["mode"] == "eager_adapt" and len(record.trees) >= 1
    sequences = {c.message.metadata["sequence"] for c in output.choices}
    assert {f.child for f in record.forks} <= sequences
    assert [s.text for s in record.sequences] == [c.message.text for c in output.choices]
    assert all(s.tokens for s in record.sequences)  # every token id is in the record
    assert output.completion == output.choices[0].message.text
    assert all(c.stop_reason in ("stop", "max_tokens") for c in output.choices)
    assert record.settings["max_seqs"] == 4 and record.pool.n_prompts == 1


def test_a_matched_stop_string_is_cut_from_the_output():
    """Like Inspect's vllm and API providers (vLLM's include_stop_str_in_output=False, the
    OpenAI `stop` parameter) and lm-eval's `until`; Inspect's hf provider keeps it
    (docs/INSPECT.md). The stop string's token still counts in output_tokens."""
    calm = "q2"  # the mixed script writes " 5 6 7 5 6 7" for a prompt ending in an even char
    (whole,) = asyncio.run(generate_all(provider(batch_window=0.01), [calm]))
    assert whole.completion == " 5 6 7 5 6 7"
    (cut,) = asyncio.run(generate_all(provider(batch_window=0.01), [calm],
                                      GenerateConfig(max_tokens=30, stop_seqs=[" 7"])))
    assert [c.message.text for c in cut.choices] == [" 5 6"]
    assert cut.choices[0].stop_reason == "stop" and cut.usage.output_tokens == 3


# --- the budget pool -------------------------------------------------------------------------

TEXTS = [f"q{i}" for i in range(6)]


def test_window_spanning_the_task_pools_like_the_core(tmp_path):
    """--max-connections N with batch_size N: one window, one run, the core's allotments."""
    engine = ScriptedEngine(mixed_script())
    model = get_model("eager/scripted", engine=engine, memoize=False, batch_size=len(TEXTS),
                      batch_window=30, **SETTINGS)
    log = run_eval(question_task(TEXTS), model, tmp_path, max_connections=len(TEXTS))
    assert log.status == "success"

    core = core_run(TEXTS, EagerConfig(**SETTINGS, max_new_tokens=30), mixed_script())
    assert len(core.rounds) > 1  # the pool really reallocated
    by_pool_index = {s.output.metadata["pool"]["index"]: s for s in log.samples}
    assert sorted(by_pool_index) == list(range(len(TEXTS)))
    for i, prompt in enumerate(core.prompts):
        stats = by_pool_index[i].output.metadata
        assert stats["pool"]["n_prompts"] == len(TEXTS)
        assert stats["pool"]["rounds"] == [
            {"round": r.round, "budget": r.budget,
             "allotments": {str(p): cap for p, cap in r.allotments.items()},
             "sequences_spent": r.sequences_spent, "tokens_generated": r.tokens_generated}
            for r in core.rounds]
        assert [(t["round"], t["cap"], t["theta"]) for t in stats["trees"]] == [
            (t.round, t.cap, t.theta) for t in prompt.trees]
        assert [c.message.text for c in by_pool_index[i].output.choices] == prompt.texts
        assert PromptRecord.from_dict(stats).tokens_generated == prompt.tokens_generated


def test_log_metrics_are_the_core_metrics_over_every_choice(tmp_path):
    engine = ScriptedEngine(mixed_script())
    model = get_model("eager/scripted", engine=engine, memoize=False, batch_size=len(TEXTS),
                      batch_window=30, **SETTINGS)
    targets = ["7", "5", "6", "3", "7", "12"]
    log = run_eval(question_task(TEXTS, targets), model, tmp_path, max_connections=len(TEXTS))
    core = core_run(TEXTS, EagerConfig(**SETTINGS, max_new_tokens=30), mixed_script())
    order = sorted(range(len(TEXTS)), key=lambda i: TEXTS[i])
    _, expected = score_run(core.prompts, [targets[i] for i in order], AnswerType.MATH)
    metrics = {name: m.value for name, m in log.results.scores[0].metrics.items()}
    assert list(metrics) == ["pass_at_k", "pass_at_1", "cons_at_k", "pass_rate",
                             "tokens_generated", "n_sequences", "conf_cons_at_k",
                             "top10_cons_at_k", "top90_cons_at_k"]
    assert metrics["conf_cons_at_k"] == pytest.approx(expected.conf_cons_at_k)
    assert metrics["top10_cons_at_k"] == pytest.approx(expected.top10_cons_at_k)
    assert metrics["top90_cons_at_k"] == pytest.approx(expected.top90_cons_at_k)
    assert metrics["pass_at_k"] == pytest.approx(expected.pass_at_k)
    assert 0 < expected.pass_at_k < 1
    assert metrics["pass_at_1"] == pytest.approx(expected.pass_at_1)
    assert metrics["cons_at_k"] == pytest.approx(expected.cons_at_k)
    assert metrics["pass_rate"] == pytest.approx(expected.pass_rate)
    assert metrics["tokens_generated"] == expected.tokens_generated == core.tokens_generated
    assert metrics["n_sequences"] == pytest.approx(expected.seqs_mean)


def test_epochs_are_calls_of_their_own_in_the_same_window(tmp_path):
    """--epochs E: N*E calls; --max-connections N*E and batch_size N*E keep one pool."""
    texts = TEXTS[:3]
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      batch_size=2 * len(texts), batch_window=30, **SETTINGS)
    log = run_eval(question_task(texts), model, tmp_path, max_connections=2 * len(texts), epochs=2)
    assert log.status == "success" and len(log.samples) == 6
    assert sorted(s.output.metadata["pool"]["index"] for s in log.samples) == list(range(6))
    epochs = {}
    for s in log.samples:
        epochs.setdefault(s.id, []).append([c.message.text for c in s.output.choices])
    first, second = epochs[1]  # q1 branches: same input, but each epoch has its own seeds
    assert first != second


def test_engine_from_the_command_line_is_refused():
    with pytest.raises(ConfigError, match="a loaded Engine object"):
        EagerModelAPI("scripted", engine="hf")


def test_batch_size_bounds_a_window():
    api = provider(batch_size=2, batch_window=0.2)
    outputs = asyncio.run(generate_all(api, TEXTS[:5]))
    assert sorted(o.metadata["pool"]["n_prompts"] for o in outputs) == [1, 2, 2, 2, 2]


def test_calls_with_different_run_settings_go_to_separate_runs():
    engine = ScriptedEngine(mixed_script())
    api = provider(engine, batch_size=4, batch_window=5)

    async def two_temperatures():
        hot = generate_all(api, ["q1", "q3"], GenerateConfig(max_tokens=30, temperature=1.0))
        cold = generate_all(api, ["q5", "q7"], GenerateConfig(max_tokens=30, temperature=0.2))
        return await asyncio.gather(hot, cold)

    hot, cold = asyncio.run(two_temperatures())
    assert [o.metadata["pool"]["n_prompts"] for o in hot + cold] == [2, 2, 2, 2]
    assert {o.metadata["settings"]["temperature"] for o in hot} == {1.0}
    assert {o.metadata["settings"]["temperature"] for o in cold} == {0.2}


def test_max_tokens_is_per_call_and_does_not_split_the_pool():
    api = provider(batch_size=2, batch_window=5)

    async def two_lengths():
        return await asyncio.gather(
            generate_all(api, ["q1"], GenerateConfig(max_tokens=3)),
            generate_all(api, ["q3"], GenerateConfig(max_tokens=8)))

    (short,), (long,) = asyncio.run(two_lengths())
    assert short.metadata["pool"]["n_prompts"] == long.metadata["pool"]["n_prompts"] == 2
    assert max(len(s["tokens"]) for s in short.metadata["sequences"]) == 3
    assert max(len(s["tokens"]) for s in long.metadata["sequences"]) == 8
    assert short.metadata["settings"]["max_new_tokens"] == 8  # the run's: its longest prompt's


# --- loading: after the tasks, once ---------------------------------------------------------


class CountingLoader:
    """Stands in for engines.load_engine: counts loads, hands out a ScriptedEngine (or fails)."""

    def __init__(self, error: Exception | None = None):
        self.calls, self.error = 0, error

    def __call__(self, *args: Any, **kwargs: Any) -> ScriptedEngine:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return VerifyingEngine(mixed_script())


def VerifyingEngine(script, context_length: int = 64) -> ScriptedEngine:  # noqa: N802
    """A scripted engine that checks settings against a 100-token vocabulary."""
    return ScriptedEngine(script, vocab_size=100, context_length=context_length)


@pytest.fixture
def loader(monkeypatch, tmp_path) -> CountingLoader:
    """The provider on a real model name (a directory with config.json), its load counted."""
    from eager_eval.frontends.inspect import provider as provider_module

    counting = CountingLoader()
    monkeypatch.setattr(provider_module, "load_engine", counting)
    (tmp_path / "config.json").write_text("{}")
    return counting


def test_building_the_provider_loads_no_weights_the_first_call_does(loader, tmp_path):
    """Inspect builds the model before its tasks: loading at the first call lets a task's
    missing data fail before any weights load."""
    api = EagerModelAPI(str(tmp_path), batch_window=0.01, **SETTINGS)
    assert loader.calls == 0
    (output,) = asyncio.run(generate_all(api, ["q1"]))
    assert len(output.metadata["sequences"]) >= 1
    asyncio.run(generate_all(api, ["q2", "q3"]))
    assert loader.calls == 1, "loaded once"


def test_closing_the_model_frees_its_engine(loader, tmp_path):
    """Inspect closes the model after an eval (`aclose`): the weights go, and the garbage
    collector gets them (a weak reference dies); a later call loads them again."""
    import weakref

    api = EagerModelAPI(str(tmp_path), batch_window=0.01, **SETTINGS)
    asyncio.run(generate_all(api, ["q1"]))
    assert loader.calls == 1 and api.engine.is_loaded
    engine = weakref.ref(api.engine.loaded)
    asyncio.run(api.aclose())
    assert not api.engine.is_loaded and engine() is None
    (output,) = asyncio.run(generate_all(api, ["q2"]))
    assert loader.calls == 2 and len(output.metadata["sequences"]) >= 1


def test_a_failed_load_fails_every_call_without_loading_again(loader, tmp_path):
    loader.error = ConfigError("entropy_k", 500, "<= the model's vocabulary size (100 tokens)")
    api = EagerModelAPI(str(tmp_path), batch_window=0.01, **SETTINGS)
    outputs = asyncio.run(generate_all(api, ["q1", "q2"], return_exceptions=True))
    outputs += asyncio.run(generate_all(api, ["q3"], return_exceptions=True))
    assert all(isinstance(o, ConfigError) and "vocabulary size" in str(o) for o in outputs)
    assert loader.calls == 1


def test_settings_that_do_not_fit_the_model_fail_at_its_load(loader, tmp_path, caplog):
    api = EagerModelAPI(str(tmp_path), batch_window=0.01, **{**SETTINGS, "entropy_k": 500})
    (error,) = asyncio.run(generate_all(api, ["q1"], return_exceptions=True))
    assert isinstance(error, ConfigError) and "entropy_k must be <= the model's vocabulary size" in str(error)
    assert "eager-eval: error: entropy_k must be" in caplog.text


def test_a_device_that_is_not_there_fails_when_the_provider_is_built(tmp_path, caplog):
    import torch

    from eager_eval.engines.devices import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        EagerModelAPI(str(tmp_path), device="cuda", **SETTINGS)
    assert "eager-eval: error: device 'cuda'" in caplog.text, "logged before Inspect's traceback"


def test_a_prompt_that_fills_the_context_fails_its_own_call():
    engine = VerifyingEngine(mixed_script(), context_length=10)
    texts = ["short", "a prompt longer than ten"]  # ScriptedEngine: a token per character
    outputs = asyncio.run(generate_all(provider(engine, batch_size=2, batch_window=5), texts,
                                       return_exceptions=True))
    assert len(outputs[0].metadata["sequences"]) >= 1
    assert isinstance(outputs[1], ValueError)
    assert f"is {len(texts[1])} tokens, but scripted's context holds 10" in str(outputs[1])


# --- failures --------------------------------------------------------------------------------


def test_a_failing_call_loses_no_other_result(caplog):
    def script(prompt, generated):
        if prompt[0] == ord("F"):
            raise RuntimeError("the engine broke on this prompt")
        return mixed_script()(prompt, generated)

    api = provider(ScriptedEngine(script), batch_size=4, batch_window=5)
    texts = ["q1", "BAD encode", "FAIL in run", "q2"]
    outputs = asyncio.run(generate_all(api, texts, return_exceptions=True))
    assert isinstance(outputs[1], ValueError) and "cannot be encoded" in str(outputs[1])
    assert isinstance(outputs[2], RuntimeError) and "engine broke" in str(outputs[2])
    for output in (outputs[0], outputs[3]):
        assert len(output.metadata["sequences"]) >= 1
        assert output.metadata["pool"]["n_prompts"] == 1  # re-run alone after the pooled run failed
    assert "re-running them one by one" in caplog.text


def test_a_failed_sample_keeps_the_others_in_the_log(tmp_path):
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      batch_size=3, batch_window=30, **SETTINGS)
    log = run_eval(question_task(["q1", "BAD", "q3"]), model, tmp_path, max_connections=3,
                   fail_on_error=False)
    errors = {s.input: s.error for s in log.samples if s.error is not None}
    assert list(errors) == ["BAD"] and "cannot be encoded" in errors["BAD"].message
    scored = [s for s in log.samples if s.scores]
    assert len(scored) == 2 and all(s.output.metadata["pool"]["n_prompts"] == 2 for s in scored)


def test_a_cancelled_leader_never_strands_its_batch():
    """The first call of a batch leads it; if its sample is cancelled while the batch is still
    open (a time limit), the calls that joined still get their answers from the full batch."""
    api = provider(batch_size=3, batch_window=30)
    results: dict[int, Any] = {}

    async def call(i: int) -> None:
        results[i] = await api.generate([ChatMessageUser(content=f"q{i}")], [], "auto",
                                        GenerateConfig(max_tokens=10))

    def joined() -> int:
        batch = next(iter(api.batcher._open.values()), None)
        return len(batch.slots) if batch is not None else 0

    async def until(condition) -> None:
        while not condition():
            await anyio.sleep(0)

    async def main() -> None:
        leader = anyio.CancelScope()

        async def leading_call() -> None:
            with leader:
                await call(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(leading_call)
            await until(lambda: joined() == 1)  # the leader opened the batch
            tg.start_soon(call, 1)
            await until(lambda: joined() == 2)
            leader.cancel()  # cancelled while its batch is open, waiting for a third call
            tg.start_soon(call, 2)  # the third call closes the batch (batch_size=3)

    anyio.run(main)
    assert 0 not in results  # the cancelled sample got nothing
    assert results[1].metadata["pool"]["n_prompts"] == results[2].metadata["pool"]["n_prompts"] == 3


# --- full EAGer: labels ----------------------------------------------------------------------


def labelled_script(prompt, generated):
    """'wild' prompts fork once at position 0 (texts ' 10' and ' 11'); 'calm' ones say ' 7'."""
    if len(generated) >= 1:
        return peaked(EOS)
    return flat([10, 11]) if prompt[0] == ord("w") else peaked(7)


def test_full_eager_gets_each_samples_target_through_the_solver(tmp_path):
    texts, targets = ["wild A", "wild B", "calm C"], ["10", "12", "7"]
    settings = dict(SETTINGS, max_seqs=2, theta=0.5)
    model = get_model("eager/scripted", engine=ScriptedEngine(labelled_script, greedy=True),
                      memoize=False, mode="eager", batch_size=3, batch_window=30, **settings)
    log = run_eval(question_task(texts, targets), model, tmp_path, max_connections=3)
    assert log.status == "success"
    rounds = {s.input: len(s.output.metadata["trees"]) for s in log.samples}
    # budget 2*3 - (2 + 2 + 1) = 1 goes to the unsolved prompt (eager_adapt would give it to A)
    assert rounds == {"wild A": 1, "wild B": 2, "calm C": 1}
    metrics = log.results.scores[0].metrics
    assert metrics["pass_at_k"].value == pytest.approx(2 / 3)

    adapt = core_run(texts, EagerConfig(**settings, max_new_tokens=30), labelled_script)
    assert adapt.rounds[1].allotments == {1: 1}  # sorted: calm C, wild A, wild B


def test_full_eager_without_labels_is_a_clear_error():
    api = provider(mode="eager")
    with pytest.raises(ConfigError, match="mode=eager .* needs each sample's target: .*eager_generate"):
        api.request_for([ChatMessageUser(content="q")], [], GenerateConfig())
    label = Label("B", AnswerType.CHOICE)
    request = api.request_for([ChatMessageUser(content="q")], [],
                              GenerateConfig(extra_body=label.to_extra_body()))
    assert request.label == label


def test_plain_generate_works_without_labels_for_other_modes(tmp_path):
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      batch_size=2, batch_window=30, **SETTINGS)
    log = run_eval(question_task(["q1", "q2"], solver=generate()), model, tmp_path, max_connections=2)
    assert log.status == "success"
    assert all(s.output.metadata["pool"]["n_prompts"] == 2 for s in log.samples)
