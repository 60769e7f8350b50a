"""Request grouping and request-to-slot mapping of the lm-eval adapters, on the ScriptedBackend.

`generate_texts` is the adapters' whole generate_until minus the model: these tests pin that it
returns exactly one string per request, in request order, whatever the tasks, repeats and
sequence counts, and that each task's prompts share one run() (one budget pool).
"""

from __future__ import annotations

import random

import pytest
from scripting import EOS, flat, peaked

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from eager_eval.pipeline.answers import AnswerType, extract_choice_letter, extract_math_answer  # noqa: E402
from eager_eval.core.config import ConfigError, EagerConfig  # noqa: E402
from eager_eval.engines.registry import EngineOptions  # noqa: E402
from eager_eval.engines.scripted import ScriptedEngine  # noqa: E402
from eager_eval.frontends.lm_eval.models import (  # noqa: E402
    NO_SEQUENCE,
    Run,
    generate_texts,
    split_model_args,
)
from eager_eval.frontends.lm_eval.requests import (  # noqa: E402
    group_requests,
    request_settings,
    texts_for_slots,
)
from eager_eval.frontends.lm_eval.slot_text import SlotText  # noqa: E402
from eager_eval.pipeline.prompts import PromptEncoder, PromptSettings  # noqa: E402
from eager_eval.pipeline.record import PromptRecord, SequenceRecord  # noqa: E402

BOX = {EOS: "", **{i: f" \\boxed{{{i}}}" for i in range(1, 11)}}
"""Token i decodes to a boxed answer i (EOS to nothing): a sequence's answer is its last token."""
HARD, EASY = 90, 91
"""First prompt token: HARD prompts are flat for 3 positions (ln 10 > theta: they fork up to M),
EASY prompts are peaked (one sequence)."""


def script(prompt, generated):
    if len(generated) >= 3:
        return peaked(EOS)
    if prompt[0] == HARD:
        return flat(list(range(1, 11)))  # entropy ln 10 = 2.30 nats
    return peaked(7, other=3)


def encode(context: str) -> list[int]:
    """'hard ...' / 'easy ...' -> a first token the script reads, then one for the length."""
    return [HARD if context.startswith("hard") else EASY] + [50 + len(context) % 30]


class ScriptTokenizer:
    """The prompt layer's tokenizer for these tests: `encode`, no chat template."""

    chat_template = None

    def __call__(self, text: str, *, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": encode(text)}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(BOX.get(t, f"<{t}>") for t in ids)


ENCODER = PromptEncoder(ScriptTokenizer())


def scripted_engine(script=script, vocab=BOX) -> ScriptedEngine:
    """The shipped scripted engine over this module's script and tokenizer."""
    return ScriptedEngine(script, vocab=vocab, tokenizer=ScriptTokenizer())


def scripted_run(engine: ScriptedEngine, config: EagerConfig, **fields) -> Run:
    """What an lm-eval model runs on, around `engine`."""
    return Run(engine, "scripted", EngineOptions("scripted"), PromptSettings(), config, **fields)


CONFIG = EagerConfig(mode="eager_init", max_seqs=4, theta=2.0, percentile=None, seed=3)


def instance(task: str, doc_id: int, context: str, repeats: int, gen_kwargs=None,
             doc=None) -> Instance:
    return Instance(
        request_type="generate_until", doc=doc if doc is not None else {"id": doc_id},
        arguments=(context, dict(gen_kwargs or {"until": [], "do_sample": True})), idx=0,
        metadata=(task, doc_id, repeats),
    )


def evaluator_requests(tasks: dict[str, list[tuple[str, int]]], gen_kwargs=None) -> list[Instance]:
    """Like lm_eval.evaluator: each task's docs in order, each Instance `repeats` times in a row."""
    out = []
    for task, docs in tasks.items():
        for doc_id, (context, repeats) in enumerate(docs):
            inst = instance(task, doc_id, context, repeats, gen_kwargs)
            out.extend([inst] * repeats)
    return out


def run_texts(requests, config=CONFIG, *, engine=None, explicit=frozenset(), trees=None,
              **kwargs):
    """generate_texts on the scripted engine: (texts, outcomes, the engine)."""
    engine = engine or scripted_engine()
    texts, outcomes = generate_texts(requests, scripted_run(engine, config, explicit=explicit,
                                                            trees=trees), **kwargs)
    return texts, outcomes, engine


def expected_texts(requests, outcomes) -> list[str]:
    """The rule, restated: slot j of a doc = its j-th sequence, else the marker; R = 1: Cons@k."""
    out: list[str | None] = [None] * len(requests)
    for outcome in outcomes:
        for doc, prompt, record in zip(outcome.group.docs, outcome.result.prompts,
                                       outcome.records):
            texts = prompt.texts
            if len(doc.slots) == 1:
                out[doc.slots[0]] = texts_for_slots(record, 1)[0]
                continue
            for j, slot in enumerate(doc.slots):
                out[slot] = texts[j] if j < len(texts) else NO_SEQUENCE
    return out  # type: ignore[return-value]


def test_one_string_per_request_in_order_across_tasks():
    requests = evaluator_requests({
        "task_a": [("hard one", 6), ("easy one", 6), ("hard two", 6)],  # R > S_p
        "task_b": [("hard three", 2), ("easy two", 2)],  # R < S_p for the hard doc
        "task_c": [("hard four", 1), ("easy three", 1)],  # stock tasks: R = 1
    })
    texts, outcomes, _ = run_texts(requests)
    assert len(texts) == len(requests)
    assert all(isinstance(t, SlotText) for t in texts)  # strings that carry their doc's record
    assert texts == expected_texts(requests, outcomes)
    for outcome in outcomes:
        for doc, record in zip(outcome.group.docs, outcome.records):
            assert all(texts[slot].record is record for slot in doc.slots)
    n_seqs = {o.group.task_name: [p.n_sequences for p in o.result.prompts] for o in outcomes}
    assert n_seqs == {"task_a": [4, 1, 4], "task_b": [4, 1], "task_c": [4, 1]}


def test_repeats_above_sequences_end_in_markers():
    requests = evaluator_requests({"t": [("hard", 6), ("easy", 6)]})
    texts, outcomes, _ = run_texts(requests)
    hard, easy = outcomes[0].result.prompts
    assert texts[:6] == hard.texts + [NO_SEQUENCE] * 2
    assert texts[6:] == easy.texts + [NO_SEQUENCE] * 5
    assert NO_SEQUENCE not in hard.texts + easy.texts


def test_repeats_below_sequences_hold_the_first_sequences():
    requests = evaluator_requests({"t": [("hard", 2), ("easy", 2)]})
    texts, outcomes, _ = run_texts(requests)
    hard, easy = outcomes[0].result.prompts
    assert hard.n_sequences == 4
    assert texts[:2] == hard.texts[:2]
    assert texts[2:] == [easy.texts[0], NO_SEQUENCE]


def test_repeats_one_gets_the_majority_vote_sequence():
    def record(texts):
        sequences = [SequenceRecord(i, 0, None, 0, text) for i, text in enumerate(texts)]
        return PromptRecord("p", 0, None, None, None, sequences).vote(AnswerType.MATH.value)

    texts = ["so \\boxed{5}", "so \\boxed{7}", "then \\boxed{5}", "thus \\boxed{7}", "\\boxed{7}"]
    assert texts_for_slots(record(texts), 1) == ["so \\boxed{7}"]  # 7 wins 3-2
    assert texts_for_slots(record(texts), 2) == texts[:2]
    assert texts_for_slots(record(["\\boxed{1}", "\\boxed{2}"]), 1) == ["\\boxed{1}"]  # tie: first


def test_one_run_per_task_holds_all_its_docs():
    requests = evaluator_requests({"a": [("hard", 3), ("easy", 3), ("hard x", 3)],
                                   "b": [("easy", 1), ("hard", 1)]})
    _, outcomes, backends = run_texts(requests)
    assert [o.group.task_name for o in outcomes] == ["a", "b"]
    assert len(backends.runs) == 2  # one run() per task: its budget pool spans its docs
    assert [len(prompts) for prompts in backends.runs] == [3, 2]
    assert [len(o.group.docs) for o in outcomes] == [3, 2]


def test_distinct_generation_kwargs_get_their_own_runs():
    sampled = {"until": [], "do_sample": True, "temperature": 0.9}
    greedy = {"until": [], "do_sample": False}
    requests = ([instance("a", 0, "hard", 2, sampled)] * 2
                + [instance("a", 1, "hard", 2, greedy)] * 2)
    texts, outcomes, backends = run_texts(requests)
    assert len(texts) == 4
    assert [c.temperature for c in backends.configs] == [0.9, 0.0]
    assert texts == expected_texts(requests, outcomes)


def test_slots_follow_the_request_list_not_adjacency():
    docs = [instance("t", i, ("hard " if i % 2 else "easy ") + str(i), 3) for i in range(4)]
    requests = [d for d in docs for _ in range(3)]
    random.Random(0).shuffle(requests)
    texts, outcomes, _ = run_texts(requests)
    assert len(group_requests(requests)[0].docs) == 4
    assert texts == expected_texts(requests, outcomes)


def test_budget_pool_spans_the_task_in_eager_adapt():
    config = CONFIG.replace(mode="eager_adapt", max_seqs=2)
    requests = evaluator_requests({"t": [("hard a", 1), ("easy", 1), ("hard b", 1)]})
    _, outcomes, backends = run_texts(requests, config=config)
    result = outcomes[0].result
    assert len(backends.runs) == 1
    assert result.rounds[0].budget == 6  # M * N over the task's three prompts
    assert len(result.rounds) > 1  # the easy prompt's unspent budget went to the hard ones
    assert result.prompts[0].n_sequences > 2


def test_until_and_max_gen_toks_reach_the_runner():
    vocab = {**BOX, 7: "stop here", 3: " x"}

    def long_script(prompt, generated):
        return peaked(3) if len(generated) < 20 else peaked(EOS)

    requests = [instance("t", 0, "easy", 1, {"until": ["stop"], "max_gen_toks": 5}),
                instance("t", 1, "easy", 1, {"until": [], "max_gen_toks": 4})]
    texts, outcomes, engine = run_texts(requests, engine=scripted_engine(long_script, vocab))
    assert outcomes[1].result.prompts[0].sequences[0].tokens == [3, 3, 3, 3]
    assert [c.max_new_tokens for c in engine.configs] == [5, 4]
    texts, _, _ = run_texts(requests[:1], engine=scripted_engine(script, vocab))
    assert texts[0] == ""  # cut before the stop string (the first token carries it)


def test_finalize_applies_to_texts_never_to_markers():
    requests = evaluator_requests({"t": [("easy", 3)]})
    texts, _, _ = run_texts(requests, finalize=lambda text: text.upper())
    assert texts == [" \\BOXED{7} \\BOXED{7} \\BOXED{7}", NO_SEQUENCE, NO_SEQUENCE]


def test_request_settings_map_lm_eval_generation_kwargs():
    s = request_settings({"until": "Q:", "max_new_tokens": 9, "max_gen_toks": 7, "do_sample": False,
                          "temperature": 0.8, "top_p": 0.5, "repetition_penalty": 1.1,
                          "eager_answer_type": "Choice", "eager_target_field": "label"}, CONFIG)
    assert s.stop == ("Q:",)
    assert s.max_new_tokens == 7 and s.config.max_new_tokens == 7  # lm-eval's priority order
    assert s.config.temperature == 0.0  # do_sample=False wins over temperature
    assert s.config.top_p == 0.5
    assert s.answer_type is AnswerType.CHOICE and s.target_field == "label"
    assert s.ignored == ("repetition_penalty",)


def test_request_settings_defaults():
    config = CONFIG.replace(temperature=0.7, max_new_tokens=99)
    s = request_settings({"until": ["a", "b"]}, config, default_max_gen_toks=256)
    assert s.config.temperature == 0.7  # no sampling kwargs: the model args decide
    assert s.max_new_tokens == 256  # lm-eval's default unless max_new_tokens is a model arg
    s = request_settings({}, config, explicit=frozenset({"max_new_tokens"}))
    assert s.max_new_tokens == 99 and s.stop == ()
    sampled = request_settings({"temperature": 1.3, "do_sample": True}, config)
    assert sampled.config.temperature == 1.3


@pytest.mark.parametrize("gen_kwargs, parameter", [
    ({"eager_answer_type": "essay"}, "eager_answer_type"),
    ({"until": 5}, "until"),
    ({"top_p": 0.0}, "top_p"),
    ({"temperature": -1.0}, "temperature"),
])
def test_bad_generation_kwargs_are_named(gen_kwargs, parameter):
    with pytest.raises(ConfigError) as err:
        request_settings(gen_kwargs, CONFIG)
    assert err.value.parameter == parameter


def test_mode_eager_without_labels_is_a_clear_error():
    requests = evaluator_requests({"gsm8k": [("hard", 1), ("easy", 1)]})
    pattern = "mode=eager.*2 of 2 prompts of lm_eval-gsm8k.*eager_target_field.*eager_adapt"
    with pytest.raises(ConfigError, match=pattern):
        run_texts(requests, config=CONFIG.replace(mode="eager"))


def test_mode_eager_reads_labels_from_docs_or_generation_kwargs():
    config = CONFIG.replace(mode="eager", max_seqs=2)
    labelled = [instance("t", i, "hard", 1, doc={"eager_target": "7", "eager_answer_type": "math"})
                for i in range(2)]
    texts, outcomes, _ = run_texts(labelled, config=config)
    assert len(texts) == 2 and all(p.label for p in outcomes[0].pool.prompts)
    gen_kwargs = {"until": [], "eager_answer_type": "math", "eager_target_field": "answer"}
    stock = [instance("t", i, "hard", 1, gen_kwargs, doc={"answer": "3"}) for i in range(2)]
    texts, outcomes, _ = run_texts(stock, config=config)
    assert len(texts) == 2 and all(p.label for p in outcomes[0].pool.prompts)
    assert outcomes[0].settings.ignored == ()  # the eager keys never reach an engine


def test_empty_request_list():
    assert run_texts([])[:2] == ([], [])


def test_split_model_args_rejects_unknown_names_with_the_accepted_list():
    eager, rest = split_model_args({"theta": 2.5, "mode": "eager", "dtype": "float32"},
                                   frozenset({"dtype", "device"}), "eager-hf")
    assert eager == {"theta": 2.5, "mode": "eager"} and rest == {"dtype": "float32"}
    with pytest.raises(ConfigError) as err:
        split_model_args({"thetta": 2.5}, frozenset({"dtype"}), "eager-hf")
    message = str(err.value)
    assert "unknown eager-hf model arg 'thetta'" in message and "did you mean 'theta'" in message
    assert "dtype" in message and "max_seqs" in message


def test_marker_is_never_an_answer():
    assert extract_math_answer(NO_SEQUENCE) is None
    assert extract_choice_letter(NO_SEQUENCE) is None


def test_progress_bar_per_task_changes_nothing_generated():
    import io

    from rich.console import Console

    from eager_eval.pipeline.progress import RunProgress

    requests = evaluator_requests({"t": [("hard a", 2), ("easy", 2), ("hard b", 2)]})
    config = CONFIG.replace(mode="eager_adapt", max_seqs=2)
    want, _, _ = run_texts(requests, config=config)
    out = io.StringIO()
    with RunProgress(console=Console(file=out, width=120)) as progress:
        texts, outcomes, _ = run_texts(requests, config=config, progress=progress)
    assert texts == want
    later = sum(len(p.trees) - 1 for p in outcomes[0].result.prompts)
    assert later > 0 and f"3/3 prompts, +{later} realloc trees" in out.getvalue()
    assert out.getvalue().lstrip().startswith("t ")
