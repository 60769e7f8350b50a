"""`trees=DIR` in lm-eval and Inspect: every finished tree is on disk as it ends, and the same
command run again after a crash reads them back and grows only the rest, with the trees and
texts of an uninterrupted run."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("inspect_ai")

from test_inspect_provider import SETTINGS  # noqa: E402
from test_lm_eval_mapping import CONFIG, evaluator_requests, run_texts, scripted_engine  # noqa: E402

from eager_eval.common.files import OutputDirError, OutputInUseError  # noqa: E402
from eager_eval.common.files import OutputLock  # noqa: E402
from eager_eval.engines.registry import EngineOptions  # noqa: E402
from eager_eval.engines.scripted import ScriptedEngine, mixed_script  # noqa: E402
from eager_eval.frontends.inspect.provider import EagerModelAPI  # noqa: E402
from eager_eval.pipeline.prompts import Prompt, PromptSettings  # noqa: E402
from eager_eval.pipeline.store import TreesDir, pool_fingerprint  # noqa: E402

ADAPT = CONFIG.replace(mode="eager_adapt", max_seqs=2)
REQUESTS = evaluator_requests({"t": [("hard a", 2), ("easy", 2), ("hard b", 2), ("easy c", 2)]})


class Crash(Exception):
    """Stands in for a kill or Ctrl-C in the middle of a run."""


def crashing_engine(steps: int) -> ScriptedEngine:
    """The scripted engine of test_lm_eval_mapping, dying after `steps` engine steps (summed
    over its backends)."""
    engine = scripted_engine()
    left = [steps]
    new_backend = engine.new_backend

    def dying_backend(config):
        backend = new_backend(config)
        step = backend.step

        def dying_step():
            left[0] -= 1
            if left[0] < 0:
                raise Crash
            return step()

        backend.step = dying_step
        return backend

    engine.new_backend = dying_backend
    return engine


def tree_lines(directory) -> list[dict]:
    (path,) = directory.glob("lm_eval-t-*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def roots_added(engine: ScriptedEngine) -> int:
    return sum(len(prompts) for prompts in engine.runs)


def test_lm_eval_run_resumes_from_its_trees_after_a_crash(tmp_path):
    trees = TreesDir(tmp_path)
    want, want_outcomes, clean = run_texts(REQUESTS, config=ADAPT)
    assert len(want_outcomes[0].result.rounds) > 1  # reallocation happened: trees of round 1

    with pytest.raises(Crash):
        run_texts(REQUESTS, config=ADAPT, engine=crashing_engine(steps=4), trees=trees)
    saved = tree_lines(tmp_path)
    assert 0 < len(saved) < sum(len(p.trees) for p in want_outcomes[0].result.prompts)

    texts, outcomes, again = run_texts(REQUESTS, config=ADAPT, trees=trees)
    assert texts == want
    assert [r.to_dict() for r in outcomes[0].records] == [r.to_dict() for r in want_outcomes[0].records]
    assert roots_added(again) == roots_added(clean) - len(saved)  # the saved trees were not regrown

    texts, _, done = run_texts(REQUESTS, config=ADAPT, trees=trees)  # nothing left to grow
    assert texts == want and roots_added(done) == 0


def test_other_settings_or_prompts_get_their_own_tree_file(tmp_path):
    trees = TreesDir(tmp_path)
    run_texts(REQUESTS, config=ADAPT, trees=trees)
    run_texts(REQUESTS, config=ADAPT.replace(seed=4), trees=trees)
    run_texts(REQUESTS[:4], config=ADAPT, trees=trees)
    assert len(list(tmp_path.glob("lm_eval-t-*.jsonl"))) == 3


def test_a_second_process_on_the_same_directory_stops_at_once(tmp_path):
    with OutputLock(tmp_path):  # held as by another process's run
        with pytest.raises(OutputInUseError, match=str(tmp_path)):
            with TreesDir(tmp_path).open("x", {"a": 1}):
                pass


def test_bad_trees_directory_is_one_clear_error_before_any_model(tmp_path):
    from eager_eval.frontends.lm_eval.models import EagerHFLM

    afile = tmp_path / "f"
    afile.write_text("")
    with pytest.raises(OutputDirError, match="trees .* is a file"):
        EagerHFLM(pretrained="smollm2-135m", trees=str(afile), engine=object())
    with pytest.raises(OutputDirError, match="trees .* is a file"):
        EagerModelAPI("scripted", engine=ScriptedEngine(mixed_script()), trees=str(afile))


def test_inspect_provider_keeps_and_reuses_its_trees(tmp_path):
    texts = ["abc", "abd", "xyz", "pq"]

    def answers(engine, **args):
        api = EagerModelAPI("scripted", engine=engine, **{**SETTINGS, "mode": "eager_adapt",
                                                           "trees": str(tmp_path), **args})
        from test_inspect_provider import generate_all

        outputs = asyncio.run(generate_all(api, texts))
        return [[c.message.text for c in out.choices] for out in outputs]

    first_engine = ScriptedEngine(mixed_script())
    first = answers(first_engine)
    (path,) = tmp_path.glob("inspect-*.jsonl")
    n_trees = len(path.read_text().splitlines()) - 1
    assert n_trees >= len(texts)

    class NoGeneration(ScriptedEngine):
        def new_backend(self, config):
            backend = super().new_backend(config)

            def add(trees):
                raise AssertionError("every tree was on disk: nothing should be generated")

            backend.add = add
            return backend

    assert answers(NoGeneration(mixed_script())) == first


def test_lm_eval_model_arg_trees_keeps_and_reuses_each_tasks_trees(tmp_path):
    from eager_eval.frontends.lm_eval.models import EagerHFLM

    class Engine(ScriptedEngine):
        trees_added = 0  # over every engine of the test

        def verify(self, config):
            pass

        def new_backend(self, config):
            backend = super().new_backend(config)
            add = backend.add

            def counting_add(trees):
                type(self).trees_added += len(trees)
                return add(trees)

            backend.add = counting_add
            return backend

    settings = {**SETTINGS, "mode": "eager_adapt", "trees": str(tmp_path)}
    requests = evaluator_requests({"t": [("ab", 2), ("abc", 2), ("xyz", 2)]})
    first = EagerHFLM("scripted", engine=Engine(mixed_script()), **settings).generate_until(requests)
    grown = Engine.trees_added
    assert grown >= 3 and len(list(tmp_path.glob("lm_eval-t-*.jsonl"))) == 1
    lm = EagerHFLM("scripted", engine=Engine(mixed_script()), **settings)
    assert lm.generate_until(requests) == first and Engine.trees_added == grown
    assert lm.get_model_info()["eager_eval"]["trees"] == str(tmp_path)


def test_inspect_pool_shows_its_progress_in_inspects_display():
    """A pool answers its calls only when it ends, so the provider shows a counter meanwhile."""
    from test_inspect_provider import generate_all

    api = EagerModelAPI("scripted", engine=ScriptedEngine(mixed_script()),
                        **{**SETTINGS, "mode": "eager_adapt"})
    shown: list[tuple[str, str]] = []
    api.worker.counter = lambda caption, value: shown.append((caption, value))
    asyncio.run(generate_all(api, ["abc", "abd", "xyz", "pq"]))
    assert shown and all(caption == "eager pool" for caption, _ in shown)
    final = shown[-1][1]
    assert final.startswith("4/4 prompts, +") and final.endswith("tok/s")
    assert int(final.split("+")[1].split()[0]) > 0  # mixed_script's odd prompts get more trees
    assert len({value for _, value in shown}) > 2  # it moved while the pool ran


def test_full_eagers_labels_are_part_of_its_fingerprint():
    def fingerprint(config, labels):
        return pool_fingerprint("m", EngineOptions("scripted"), PromptSettings(), config,
                                [Prompt("q")], labels)

    eager = ADAPT.replace(mode="eager")
    assert fingerprint(eager, ["1"]) != fingerprint(eager, ["2"])
    assert fingerprint(ADAPT, ["1"]) == fingerprint(ADAPT, ["2"])  # labels-blind modes
