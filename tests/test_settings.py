"""The one setting parser (eager_eval.common.settings) and the rename of the entropy's K.

`topk` (the K of the top-K entropy) read like sampling's `top_k`; it is `entropy_k` now. Every
front end still takes the old name, with a DeprecationWarning that names the new one, and every
output records only the new one; an old run directory still resumes.
"""

from __future__ import annotations

import json
import math

import pytest

from eager_eval.core.config import ConfigError, EagerConfig, total_budget
from eager_eval.common.settings import (
    SettingError,
    number_or_none,
    parse_key_values,
    parse_value,
    positive_int,
    positive_number,
    renamed_settings,
    split_settings,
)


@pytest.mark.parametrize("text, value", [
    ("none", None), ("NULL", None), ("", None), ("inf", math.inf), ("-inf", -math.inf),
    ("true", True), ("False", False), ("2", 2), ("0.6", 0.6), ("1e-3", 1e-3),
    ("</think>", "</think>"), ("[a, b]", ["a", "b"]), ("{k: 1}", {"k": 1}), (3, 3),
])
def test_parse_value_reads_what_front_ends_hand_over(text, value):
    assert parse_value(text) == value


def test_numbers_are_checked_in_one_place_with_one_message():
    assert positive_int("4", "max_rows") == 4 and positive_int(2.0, "batch_size") == 2
    for bad in (0, -1, "x", 1.5, True, None):
        with pytest.raises(SettingError, match=r"max_rows must be an integer >= 1 \(rows\), got"):
            positive_int(bad, "max_rows", "(rows)")
    assert positive_number("0.5", "batch_window") == 0.5
    for bad in (0, "inf", "nan", "soon", False):
        with pytest.raises(SettingError, match="batch_window must be a finite number > 0"):
            positive_number(bad, "batch_window")
    assert number_or_none("nan") is None and number_or_none("x") is None
    assert number_or_none("12") == 12


def test_key_values_read_lm_eval_model_args():
    assert parse_key_values("pretrained=m,theta=inf,max_seqs=4") == {
        "pretrained": "m", "theta": math.inf, "max_seqs": 4}
    assert parse_key_values('{"theta": "2.5"}') == {"theta": 2.5}
    assert parse_key_values(None) == {} and parse_key_values("garbage") == {}


def test_split_settings_names_the_closest_and_every_accepted_name():
    eager, own = split_settings({"theta": 2, "device": "cpu"}, EagerConfig.field_names(),
                                {"device"}, "test option")
    assert eager == {"theta": 2} and own == {"device": "cpu"}
    with pytest.raises(SettingError) as err:
        split_settings({"thetta": 2}, EagerConfig.field_names(), {"device"}, "test option")
    assert "unknown test option 'thetta' (did you mean 'theta'?)" in str(err.value)
    assert "device" in str(err.value) and "entropy_k" in str(err.value)


def test_the_budget_is_m_times_n():
    assert EagerConfig(max_seqs=7).budget(3) == total_budget(7, 3) == 21


# --- the rename ------------------------------------------------------------------------------


def test_old_name_is_accepted_with_a_warning_naming_the_new_one():
    with pytest.warns(DeprecationWarning, match="'topk' is deprecated: it is now 'entropy_k'"):
        config = EagerConfig.from_mapping({"topk": "7"})
    assert config.entropy_k == 7 and "topk" not in config.to_dict()  # stored under the new name only
    with pytest.warns(DeprecationWarning, match="entropy_k"):
        assert EagerConfig(topk=5).entropy_k == 5
    with pytest.warns(DeprecationWarning, match="entropy_k"):
        assert EagerConfig().replace(topk=3).entropy_k == 3
    settings = EagerConfig(entropy_k=6).to_dict()
    assert settings["entropy_k"] == 6 and "topk" not in settings  # outputs record the new name


def test_both_names_at_once_is_refused():
    with pytest.raises(SettingError, match="'topk' and 'entropy_k' are the same setting"):
        renamed_settings({"topk": 3, "entropy_k": 4}, "model arg")


def test_errors_name_the_new_setting():
    with pytest.raises(ConfigError, match="entropy_k must be an integer >= 2, got 1"):
        EagerConfig(entropy_k=1)
    with pytest.raises(ConfigError, match="entropy_k must be <= the model's vocabulary size"):
        EagerConfig(entropy_k=50).verify_model(vocab_size=10)


def test_cli_takes_the_old_flag_and_says_so(capsys):
    from eager_eval.frontends.cli.main import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--model", "m", "--data", "d", "--output", "o",
                                      "--topk", "9"])
    with pytest.warns(DeprecationWarning):
        config = config_from_args(args)
    assert config.entropy_k == 9
    assert "--topk is deprecated: it is now --entropy-k" in capsys.readouterr().err


def test_a_run_directory_from_before_the_rename_still_resumes(tmp_path):
    """Its tree file's fingerprint says `topk`; the same settings under `entropy_k` match."""
    from eager_eval.pipeline.store import JsonlTreeStore, ResumeMismatchError, check_resumable

    new = {"model": "m", "settings": EagerConfig(entropy_k=5).to_dict()}
    old_settings = {("topk" if k == "entropy_k" else k): v for k, v in new["settings"].items()}
    path = tmp_path / "trees.jsonl"
    JsonlTreeStore(path, {"model": "m", "settings": old_settings}).close()
    header = json.loads(path.read_text().splitlines()[0])
    assert "topk" in header["fingerprint"]["settings"]  # really the old form
    check_resumable(path, new)
    JsonlTreeStore(path, new).close()
    other = {"model": "m", "settings": EagerConfig(entropy_k=6).to_dict()}
    with pytest.raises(ResumeMismatchError):
        check_resumable(path, other)


def test_the_report_reads_an_old_output_under_the_new_name():
    from eager_eval.report.runs import normalise_settings

    assert normalise_settings({"topk": "20", "theta": "2.5"}) == {"entropy_k": 20, "theta": 2.5}


def test_a_sweep_config_takes_the_old_key(tmp_path):
    from eager_eval.frontends.cli.sweep import parse_sweep_config

    with pytest.warns(DeprecationWarning, match="entropy_k"):
        sweep = parse_sweep_config({"models": ["m"], "tasks": ["aime25"], "modes": ["eager_init"],
                                    "topk": 5, "output": str(tmp_path)})
    assert sweep.settings == {"entropy_k": 5}
