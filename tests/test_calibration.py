"""Pins eager_eval/pipeline/calibration.py (theta=auto) and theta=auto in the three front ends: the CLI
(recorded, reused on --resume), lm-eval (model_args) and Inspect (-M). The slow test shows on
the embedded SmolLM2 that auto lands between "never branches" and "every tree hits its cap".
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scripting import EOS, flat, peaked

from eager_eval.pipeline import calibration as calibration_module
from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.pipeline.calibration import (
    Calibration,
    calibrate_theta,
    target_quantile,
)
from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.core.runner import PromptInput, run
from eager_eval.core.seeds import branch_seed
from support import needs_smollm2

WIDTHS = (2, 3, 4, 5, 6, 7, 8, 9)


def widening(prompt, generated):
    """Position t is flat over WIDTHS[t % 8] tokens (entropy ln of it); EOS after 40 tokens."""
    if len(generated) >= 40:
        return peaked(EOS)
    return flat(list(range(1, 1 + WIDTHS[len(generated) % len(WIDTHS)])))


class Recording:
    """A ScriptedBackend factory that keeps the configs it was asked for and the roots added."""

    def __init__(self, script=widening, greedy=False):
        self.script, self.greedy = script, greedy
        self.configs: list[EagerConfig] = []
        self.roots: list = []

    def __call__(self, config: EagerConfig) -> ScriptedBackend:
        backend = ScriptedBackend(self.script, greedy=self.greedy)
        add = backend.add
        backend.add = lambda trees: (self.roots.extend(trees), add(trees))[1]  # type: ignore[method-assign]
        self.configs.append(config)
        return backend


CONFIG = EagerConfig(mode="eager_init", max_seqs=8, max_new_tokens=96, think_end=None, seed=4)


def test_theta_is_the_target_quantile_of_the_warmup_entropies():
    prompts = [(10 + i, 20) for i in range(5)]
    result = calibrate_theta(Recording(), prompts, CONFIG)
    warmup = [math.log(WIDTHS[t % len(WIDTHS)]) for t in range(32)] * len(prompts)
    q = 1 - math.log((8 + 1) / 2) / 96
    assert result.quantile == pytest.approx(q, abs=1e-6)
    assert result.theta == pytest.approx(np.percentile(warmup, 100 * q), abs=1e-4)
    assert result.n_entropies == 32 * 5 and result.n_prompts == 5 and result.warmup_tokens == 32
    assert result.max_entropy == pytest.approx(math.log(9), abs=1e-4)
    assert math.log(8) < result.theta < math.log(9)  # a tail quantile, not the top


def test_warmup_roots_are_the_runs_roots_spread_over_the_task():
    backends = Recording()
    calibrate_theta(backends, [(i, 1) for i in range(40)], CONFIG)
    indexes = [i * 40 // 16 for i in range(16)]
    assert [r.prompt for r in backends.roots] == [(i, 1) for i in indexes]
    assert [r.roots[0].seed for r in backends.roots] == [branch_seed(4, i, 0, 0) for i in indexes]


def test_a_full_parallel_config_calibrates_on_a_branching_backend():
    backends = Recording()
    calibrate_theta(backends, [(1,)], CONFIG.replace(mode="full_parallel"))
    assert [c.mode.value for c in backends.configs] == ["eager_init"]


def test_warmup_stops_at_eos_and_at_max_new_tokens():
    short = Recording(lambda prompt, generated: peaked(EOS) if generated else flat([1, 2, 3]))
    result = calibrate_theta(short, [(1,), (2,)], CONFIG)
    assert result.n_entropies == 4  # position 0 and the EOS position, per prompt
    result = calibrate_theta(Recording(), [(1,)], CONFIG.replace(max_new_tokens=10))
    assert result.n_entropies == 10 and result.warmup_tokens == 10


@pytest.mark.parametrize("m, length, expected", [
    (1, 96, 1.0),                            # no fork possible: the largest entropy seen
    (8, 96, 1 - math.log(4.5) / 96),         # the demo's size
    (32, 32768, 1 - math.log(16.5) / 32768),  # the paper's
    (32, 4, 0.5),                            # clamped: at most half the positions fork
])
def test_target_quantile(m, length, expected):
    assert target_quantile(m, length) == pytest.approx(expected)


def test_theta_auto_is_a_setting_like_any_other():
    assert EagerConfig.from_mapping({"theta": "auto", "max_seqs": 4}).theta_is_auto
    assert EagerConfig.from_mapping({"theta": " AUTO "}).theta == "auto"
    assert EagerConfig.from_mapping({"theta": "2.5"}).theta == 2.5
    assert not EagerConfig().theta_is_auto
    assert EagerConfig(theta="auto").to_dict()["theta"] == "auto"
    with pytest.raises(ConfigError, match="theta=auto is measured first"):
        run([PromptInput((1,))], Recording()(CONFIG), CONFIG.replace(theta="auto"))
    record = calibrate_theta(Recording(), [(1,)], CONFIG).to_dict()
    assert Calibration.from_dict(json.loads(json.dumps(record))).to_dict() == record


# --- the CLI ---------------------------------------------------------------------------------

from test_cli import math_file, run_args, tiny_model_dir  # noqa: E402,F401 (fixtures)

from eager_eval.frontends.cli import main as cli, session  # noqa: E402


def test_cli_theta_auto_is_recorded_and_reused_on_resume(capsys, math_file, tmp_path,  # noqa: F811
                                                          tiny_model_dir, monkeypatch):  # noqa: F811
    out = tmp_path / "run"
    args = [a if a != "1.0" else "auto" for a in run_args(tiny_model_dir, math_file, out)]
    assert "--theta" in args and args[args.index("--theta") + 1] == "auto"
    assert cli.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    recorded = json.loads((out / session.CALIBRATION_FILE).read_text())
    assert results["theta_auto"] == recorded
    assert results["runs"][0]["settings"]["theta"] == recorded["theta"] > 0
    assert "theta=auto:" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / results["runs"][0]["samples"]).open()]
    assert records and all(r["calibration"] == recorded for r in records)  # as every front end

    def no_warmup(*_, **__):
        raise AssertionError("--resume must reuse the recorded theta")

    monkeypatch.setattr(calibration_module, "calibrate_theta", no_warmup)
    assert cli.main(args + ["--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"][0]["settings"]["theta"] == recorded["theta"]
    assert f"theta=auto: {recorded['theta']:g}, recorded in" in capsys.readouterr().err


# --- lm-eval ---------------------------------------------------------------------------------

lm_eval = pytest.importorskip("lm_eval")

from test_lm_eval_mapping import evaluator_requests, run_texts  # noqa: E402

from eager_eval.frontends.lm_eval.models import group_statistics  # noqa: E402


def test_lm_eval_groups_calibrate_theta_on_their_own_prompts():
    requests = evaluator_requests({"hard_task": [("hard one", 1), ("hard two", 1)],
                                   "easy_task": [("easy one", 1)]})
    _, outcomes, _ = run_texts(requests, config=EagerConfig(mode="eager_init", max_seqs=4,
                                                            percentile=None, theta="auto"))
    by_task = {o.group.task_name: o.pool for o in outcomes}
    hard, easy = by_task["hard_task"], by_task["easy_task"]
    assert hard.calibration is not None and easy.calibration is not None
    assert hard.result.settings["theta"] == hard.calibration.theta
    assert hard.calibration.theta > easy.calibration.theta  # flat vs peaked prompts
    assert all(r.calibration == hard.calibration.to_dict() for r in hard.records)
    stats = group_statistics(next(o for o in outcomes if o.group.task_name == "hard_task"))
    assert stats["theta"] == hard.calibration.theta
    assert stats["theta_auto"] == hard.calibration.to_dict()


def test_lm_eval_model_arg_theta_auto(tmp_path):
    from test_lm_eval_models import save_tiny_model

    from eager_eval.frontends.lm_eval.models import EagerHFLM

    tiny = save_tiny_model(tmp_path / "tiny")
    lm = EagerHFLM.create_from_arg_obj({"pretrained": str(tiny), "theta": "auto", "max_seqs": 2},
                                       {"device": "cpu"})
    assert lm.get_model_info()["eager_eval"]["settings"]["theta"] == "auto"
    assert lm.eager_config.theta_is_auto  # measured on each task's prompts when it runs


# --- Inspect ---------------------------------------------------------------------------------

pytest.importorskip("inspect_ai")

from inspect_ai.model import get_model  # noqa: E402
from test_inspect_provider import (  # noqa: E402
    SETTINGS,
    ScriptedEngine,
    mixed_script,
    question_task,
    run_eval,
)


def test_inspect_theta_auto_is_calibrated_once_and_logged(tmp_path):
    settings = {**SETTINGS, "theta": "auto"}
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      **settings)
    log = run_eval(question_task([f"q{i}" for i in range(8)]), model, tmp_path)
    assert log.status == "success"
    metadata = [s.output.metadata for s in log.samples]  # each sample's prompt record
    (theta,) = {m["settings"]["theta"] for m in metadata}
    assert all(m["calibration"]["theta"] == theta for m in metadata)
    assert metadata[0]["calibration"]["n_prompts"] == 8
    assert log.eval.model_args["theta"] == "auto"


# --- the embedded model (slow) ---------------------------------------------------------------


@pytest.mark.slow
@needs_smollm2
def test_on_smollm2_auto_lands_between_never_branching_and_every_tree_at_its_cap():
    """M = 4 on four demo problems, 48 tokens. theta = inf keeps one sequence per prompt; a
    fixed theta at the warm-up's median fills every tree; the calibrated one, with the default
    dynamic threshold (percentile 99), does neither. Measured here: [3, 2, 3, 2] sequences."""
    import torch

    from eager_eval.engines.registry import load_engine
    from eager_eval.pipeline.demo_problems import demo_problems
    from eager_eval.pipeline.prompts import Prompt, PromptEncoder
    from eager_eval.core.runner import run

    torch.set_num_threads(1)
    engine = load_engine("smollm2-135m")
    encoder = PromptEncoder.for_engine(engine)
    prompts = [encoder.encode(Prompt(p.problem)) for p in demo_problems(4)]
    config = EagerConfig(mode="eager_init", max_seqs=4, max_new_tokens=48, think_end=None)
    found = calibrate_theta(engine.new_backend, [p.tokens for p in prompts], config)
    assert found.median_entropy < found.theta < found.max_entropy

    def trees(config: EagerConfig):
        result = run(prompts, engine.new_backend(config), config)
        return [p.trees[0] for p in result.prompts]

    never = trees(config.replace(theta=math.inf))
    assert all(len(t.sequences) == 1 for t in never)
    hot = trees(config.replace(theta=found.median_entropy, percentile=None))
    assert all(t.hit_cap for t in hot)
    auto = trees(config.replace(theta=found.theta))
    sizes = [len(t.sequences) for t in auto]
    print(f"theta auto {found.theta:.3f}: sequences per prompt {sizes}")
    assert sum(sizes) > len(auto)            # it branches
    assert not all(t.hit_cap for t in auto)  # and not everywhere
