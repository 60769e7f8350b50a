"""`trees=DIR` in lm-eval and Inspect: every finished tree is on disk as it ends, and the same
command run again after a crash reads them back and grows only the rest, with the trees and
texts of an uninterrupted run."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("inspect_ai")

from test_inspect_provider import SETTINGS, ScriptedEngine, mixed_script  # noqa: E402
from test_lm_eval_mapping import CONFIG, ENCODER, Backends, evaluator_requests  # noqa: E402

from eager_eval.common.files import OutputDirError, OutputInUseError, OutputLock  # noqa: E402
from eager_eval.frontends.inspect.provider import EagerModelAPI  # noqa: E402
from eager_eval.frontends.lm_eval.models import generate_texts  # noqa: E402
from eager_eval.core.tree import PromptInput  # noqa: E402
from eager_eval.pipeline.tree_cache import cached_trees, pool_fingerprint  # noqa: E402

ADAPT = CONFIG.replace(mode="eager_adapt", max_seqs=2)
REQUESTS = evaluator_requests({"t": [("hard a", 2), ("easy", 2), ("hard b", 2), ("easy c", 2)]})


class Crash(Exception):
    """Stands in for a kill or Ctrl-C in the middle of a run."""


class CrashingBackends(Backends):
    """Backends that die after `steps` engine steps (summed over the run's backends)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.left = steps

    def __call__(self, config):
        backend = super().__call__(config)
        step = backend.step

        def dying_step():
            self.left -= 1
            if self.left < 0:
                raise Crash
            return step()

        backend.step = dying_step
        return backend


def opener(directory):
    def open_store(task, config, prompts, labels):
        return cached_trees(directory, f"lm_eval-{task}",
                            pool_fingerprint("m", {}, config, prompts, labels))
    return open_store


def tree_lines(directory) -> list[dict]:
    (path,) = directory.glob("lm_eval-t-*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def roots_added(backends: Backends) -> int:
    return sum(len(backend.roots) for backend in backends.backends)


def test_lm_eval_run_resumes_from_its_trees_after_a_crash(tmp_path):
    clean = Backends()
    want, want_outcomes = generate_texts(REQUESTS, config=ADAPT, new_backend=clean, encoder=ENCODER)
    assert len(want_outcomes[0].result.rounds) > 1  # reallocation happened: trees of round 1

    crashing = CrashingBackends(steps=4)
    with pytest.raises(Crash):
        generate_texts(REQUESTS, config=ADAPT, new_backend=crashing, encoder=ENCODER,
                       open_store=opener(tmp_path))
    saved = tree_lines(tmp_path)
    assert 0 < len(saved) < sum(len(p.trees) for p in want_outcomes[0].result.prompts)

    again = Backends()
    texts, outcomes = generate_texts(REQUESTS, config=ADAPT, new_backend=again, encoder=ENCODER,
                                     open_store=opener(tmp_path))
    assert texts == want
    assert [r.to_dict() for r in outcomes[0].records] == [r.to_dict() for r in want_outcomes[0].records]
    assert roots_added(again) == roots_added(clean) - len(saved)  # the saved trees were not regrown

    done = Backends()  # everything on disk: nothing is generated a third time
    assert generate_texts(REQUESTS, config=ADAPT, new_backend=done, encoder=ENCODER,
                          open_store=opener(tmp_path))[0] == want
    assert roots_added(done) == 0


def test_other_settings_or_prompts_get_their_own_tree_file(tmp_path):
    generate_texts(REQUESTS, config=ADAPT, new_backend=Backends(), encoder=ENCODER,
                   open_store=opener(tmp_path))
    generate_texts(REQUESTS, config=ADAPT.replace(seed=4), new_backend=Backends(), encoder=ENCODER,
                   open_store=opener(tmp_path))
    generate_texts(REQUESTS[:4], config=ADAPT, new_backend=Backends(), encoder=ENCODER,
                   open_store=opener(tmp_path))
    assert len(list(tmp_path.glob("lm_eval-t-*.jsonl"))) == 3


def test_a_second_process_on_the_same_directory_stops_at_once(tmp_path):
    with OutputLock(tmp_path):  # held as by another process's run
        with pytest.raises(OutputInUseError, match=str(tmp_path)):
            with cached_trees(tmp_path, "x", {"a": 1}):
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
    prompts = [PromptInput((1, 2))]
    eager = ADAPT.replace(mode="eager")
    assert (pool_fingerprint("m", {}, eager, prompts, ["1"])
            != pool_fingerprint("m", {}, eager, prompts, ["2"]))
    assert (pool_fingerprint("m", {}, ADAPT, prompts, ["1"])  # labels-blind modes
            == pool_fingerprint("m", {}, ADAPT, prompts, ["2"]))
