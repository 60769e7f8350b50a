"""The embedded model on the demo problems: overlapping rounds give the sequential rounds' trees."""

from __future__ import annotations

import pytest
from support import needs_smollm2, one_torch_thread  # noqa: F401 (fixture)
from test_hf_runner import trees

from eager_eval.core.config import EagerConfig
from eager_eval.core.runner import run

pytestmark = [pytest.mark.slow, needs_smollm2, pytest.mark.usefixtures("one_torch_thread")]


def test_demo_rounds_overlap_and_give_the_same_trees():
    from eager_eval.pipeline.task_data import load_demo_task
    from eager_eval.engines.registry import load_engine
    from eager_eval.pipeline.prompts import Prompt, PromptEncoder

    engine = load_engine("smollm2-135m")
    task = load_demo_task(6, 0)
    encoder = PromptEncoder.for_engine(engine)
    prompts = [encoder.encode(Prompt(text)) for text in task.prompt_texts]
    config = EagerConfig(mode="eager_adapt", theta=2.2, max_seqs=4, max_new_tokens=40,
                         think_end=None, seed=0, window=16)
    sequential = run(prompts, engine.new_backend(config), config, overlap_rounds=False)
    overlapped = run(prompts, engine.new_backend(config), config)
    assert len(sequential.rounds) >= 2  # reallocation happens
    assert trees(overlapped) == trees(sequential)
    assert [r.allotments for r in overlapped.rounds] == [r.allotments for r in sequential.rounds]
