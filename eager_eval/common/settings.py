"""Settings as front ends hand them over: text -> values, one parser for every front end.

The CLI's flags, lm-eval's `--model_args`, Inspect's `-M`, a sweep's YAML and the settings the
report reads back from any output all arrive as strings or loosely typed values. This module is
the one place that turns them into Python values and splits them between EAGer's settings
(`EagerConfig`) and a front end's own options:

- `parse_value`: 'none' -> None, 'inf' -> inf, 'true' -> True, '2' -> 2, '0.6' -> 0.6, a YAML
  list or mapping ('[a, b]', '{k: v}') -> the list or mapping, anything else stays text;
- `number_or_none`, `positive_int`, `positive_number`: the number checks, each with one clear
  message naming the setting, the value and what it must be;
- `parse_key_values`: lm-eval's `k=v,k2=v2` (or a JSON object) -> a dict of parsed values;
- `split_settings`: EagerConfig names apart from a front end's own, an unknown name refused with
  the closest accepted one ("did you mean"), a renamed one (`topk` -> `entropy_k`) accepted with
  a DeprecationWarning that names the new name.

No torch, no harness: the core and the report import this.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from typing import Any, Iterable, Mapping

from eager_eval.common.errors import UserError

__all__ = [
    "RENAMED",
    "DEPRECATED_NOTE",
    "SettingError",
    "unknown_setting_error",
    "parse_value",
    "is_number",
    "int_at_least",
    "number_or_none",
    "positive_int",
    "positive_number",
    "parse_key_values",
    "renamed_settings",
    "split_settings",
]

RENAMED = {"topk": "entropy_k"}
"""Old setting name -> new one. The old name is accepted everywhere with a DeprecationWarning;
outputs record only the new one. (`topk` read like sampling's `top_k`: it was the K of the top-K
entropy.)"""

DEPRECATED_NOTE = r".* is deprecated: it is now "
"""The start of every renamed-setting warning's text (a `warnings.filterwarnings` pattern)."""

_NONE = frozenset({"none", "null", ""})
_INF = frozenset({"inf", "+inf", "infinity", "+infinity"})
_MINUS_INF = frozenset({"-inf", "-infinity"})


class SettingError(ValueError, UserError):
    """A setting is out of range or unknown; the message names the setting, the value and the
    fix. (`config.ConfigError` is this class.)"""

    def __init__(self, name: str, value: Any, expected: str, *, message: str | None = None):
        self.parameter = name
        self.value = value
        super().__init__(message or f"{name} must be {expected}, got {value!r}")


def unknown_setting_error(key: str, known: Iterable[str],
                          where: str = "EAGer setting") -> SettingError:
    """An unknown option name, with the closest accepted name and the full list."""
    names = sorted(set(known))
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SettingError(key, key, "", message=f"unknown {where} {key!r}{hint}; accepted: "
                        + ", ".join(names))


def parse_value(value: Any) -> Any:
    """A front end's text as the value it means; non-strings are returned unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    low = text.lower()
    if low in _NONE:
        return None
    if low in _INF:
        return math.inf
    if low in _MINUS_INF:
        return -math.inf
    if low in ("true", "false"):
        return low == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    if text[:1] in "[{":  # a list or a mapping (an engine option such as {k: v})
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def is_number(value: Any) -> bool:
    """An int or float, not a bool (JSON and YAML give bools where a number was meant)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(value: Any, name: str, minimum: int) -> int:
    """`value` (an int, or a float holding one) if it is an integer >= `minimum`, else a
    SettingError. Values already parsed (EagerConfig's fields); text goes to `positive_int`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SettingError(name, value, f"an integer >= {minimum}")
    return value


def number_or_none(value: Any) -> float | int | None:
    """`value` as a number (text parsed), or None when it is missing, not a number or NaN."""
    value = parse_value(value)
    if not is_number(value) or math.isnan(value):
        return None
    return value


def positive_int(value: Any, name: str, meaning: str = "") -> int:
    """`value` (an int, or text of one) if it is an integer >= 1, else a SettingError.

    `meaning` ends the message, e.g. '(most sequences decoded together)'."""
    parsed = parse_value(value)
    if isinstance(parsed, float) and parsed.is_integer():
        parsed = int(parsed)
    if not isinstance(parsed, int) or isinstance(parsed, bool) or parsed < 1:
        shown = parsed if is_number(parsed) else value  # "got 0" for the text "0"
        raise SettingError(name, shown, "an integer >= 1" + (f" {meaning}" if meaning else ""))
    return parsed


def positive_number(value: Any, name: str, expected: str = "a finite number > 0") -> float:
    """`value` as a finite number > 0, else a SettingError saying `expected`."""
    parsed = number_or_none(value)
    if parsed is None or not math.isfinite(parsed) or parsed <= 0:
        raise SettingError(name, value, expected)
    return float(parsed)


def parse_key_values(text: Any) -> dict[str, Any]:
    """lm-eval's `--model_args`: a mapping, a JSON object, or 'k=v,k2=v2' -> parsed values.

    Text that is none of these gives {} (a report reading someone else's file must not fail)."""
    if isinstance(text, Mapping):
        return {str(k): parse_value(v) for k, v in text.items()}
    if not isinstance(text, str) or not text.strip():
        return {}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return {str(k): parse_value(v) for k, v in value.items()}
    out: dict[str, Any] = {}
    for part in stripped.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = parse_value(value)
    return out


def renamed_settings(values: Mapping[str, Any], where: str = "setting",
                     *, warn: bool = True) -> dict[str, Any]:
    """`values` with old names (`RENAMED`) under their new ones, warning once per old name.

    Both spellings at once is an error: which one was meant cannot be known."""
    out = dict(values)
    for old, new in RENAMED.items():
        if old not in out:
            continue
        if new in out:
            raise SettingError(old, out[old], "", message=(
                f"{where} {old!r} and {new!r} are the same setting (the old and the new name); "
                f"give only {new!r}"))
        out[new] = out.pop(old)
        if warn:
            warnings.warn(f"{where} {old!r} is deprecated: it is now {new!r} (the K of the top-K "
                          f"entropy, not sampling's top_k); {old!r} still works for now",
                          DeprecationWarning, stacklevel=3)
    return out


def split_settings(values: Mapping[str, Any], eager_names: Iterable[str],
                   own_names: Iterable[str], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(EagerConfig settings, the front end's own options) from one mapping of options.

    An old name is renamed (with a warning); a name neither side knows is a SettingError that
    names the closest accepted one and lists them all. `where` says what the options are, e.g.
    'eager-hf model arg' or '-M option of the eager provider'."""
    eager_names, own_names = frozenset(eager_names), frozenset(own_names)
    values = renamed_settings(values, where)
    known = eager_names | own_names
    for key in sorted(values):
        if key not in known:
            raise unknown_setting_error(key, known, where)
    eager = {k: v for k, v in values.items() if k in eager_names}
    own = {k: v for k, v in values.items() if k not in eager_names}
    return eager, own
