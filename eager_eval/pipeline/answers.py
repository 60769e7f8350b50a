"""Answer extraction and equivalence: one module for lm-eval, Inspect, the report and the verifier.

Every consumer grades with the same rules, so a "correct" in an lm-eval table means the same thing
as in an Inspect log or in the report (METHOD.md section 8, Correctness):

- math answers are compared by math-verify equivalence (`\\frac{1}{2}` = `0.5` = `1/2`); the
  reference code used string equality or a substring test, which under-counts every method alike
  but not equally (longer outputs format answers more variously);
- multiple-choice answers are compared by exact letter.

No torch, transformers, vLLM, lm_eval or inspect_ai here: the core stays importable (and fast to
import) without the heavy stack. A test checks `sys.modules` in a fresh interpreter.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Sequence
from enum import Enum

__all__ = [
    "AnswerType",
    "extract_math_answer",
    "extract_choice_letter",
    "extract_answer",
    "extract_gold",
    "is_math_equivalent",
    "is_correct",
    "same_answer",
    "gold_answer",
    "matches",
]


class AnswerType(str, Enum):
    """How a task's answers are extracted and compared."""

    MATH = "math"
    """Free-form math answer (boxed, stated, or the last number); compared by math-verify."""
    CHOICE = "choice"
    """A multiple-choice letter (A, B, ...); compared by exact letter."""


MATH_TIMEOUT_S = 5
"""Per-parse / per-comparison limit for math-verify when it can use one (main thread only).

math-verify times out with `signal.alarm`, which works only in the main thread; in worker threads
(Inspect runs scorers off its event loop) we pass None, which disables the alarm instead of
raising. A pathological sympy simplification can then run long, but never raises."""

# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)")
_ANSWER_PHRASE = re.compile(
    # "The final answer is X", "the answer is: X", "ANSWER: X", "**Answer:** X"; X runs to the end
    # of the line and is trimmed by `_trim_stated_answer`.
    r"(?i:answer)\s*\**\s*(?:(?i:is)\b\s*:?|:)\s*\**[ \t]*(?P<answer>[^\n]*)"
)
_NUMBER = re.compile(
    # thousands groups ("1,000") first, else plain ints, decimals and simple fractions ("3/4");
    # a minus counts only where it cannot be subtraction ("5-3" ends in 3, not -3).
    r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?)"
)
_LETTER_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf)\s*\{([^{}]*)\}")
_BOXED_LETTER = re.compile(r"\(?([A-Za-z])\)?(?:$|[\s.:)])")
_LETTER_PHRASE = re.compile(
    # "answer is (B)", "answer: B", "ANSWER: B", "answer is option B", "answer is **C**".
    # The letter must be uppercase here: "the answer is a bit off" is not a choice.
    r"(?i:answer)\s*\**\s*(?:(?i:is)\b\s*:?|:)\s*\**\s*(?:(?i:option|choice)\s+)?"
    r"\(?(?P<letter>[A-Z])\)?(?![A-Za-z0-9])"
)
_BARE_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed X`, in text order.

    Braces are matched with nesting (`\\boxed{\\frac{1}{2}}`). A box whose braces never close
    (an output cut off by max_new_tokens) is skipped, so an earlier complete box still counts.
    """
    contents: list[str] = []
    for match in _BOX_COMMAND.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for pos in range(start, len(text)):
                if text[pos] == "{":
                    depth += 1
                elif text[pos] == "}":
                    depth -= 1
                    if depth == 0:
                        contents.append(text[start + 1 : pos].strip())
                        break
        elif start < len(text) and text[start] == " ":
            # `\boxed 5$`: the form without braces takes one token (as lighteval's extractor does)
            token = re.match(r" +([^\s$]+)", text[start:])
            if token:
                contents.append(token.group(1))
    return [content for content in contents if content]


def _trim_stated_answer(stated: str) -> str:
    """Cut "answer is X" down to X: inline math, first sentence, no trailing period or `$`."""
    stated = stated.strip().strip("*").strip()
    if stated.startswith("$"):
        closing = stated.find("$", 1)
        if closing > 0:
            return stated[1:closing].strip()
    stated = re.split(r"\.\s", stated, maxsplit=1)[0]  # "70. Let me check" -> "70"; keeps "0.5"
    stated = stated.strip().rstrip(".$*").lstrip("$").strip()
    # "2 in this context, as ..." -> "2": a number followed by prose is the number
    lead = re.match(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?(?=[\s,;:]+[A-Za-z])", stated)
    return lead.group(0).replace(",", "") if lead else stated


def extract_math_answer(text: str) -> str | None:
    """The answer a math output commits to, or None when there is nothing to grade.

    In order: the content of the last complete `\\boxed{}`/`\\fbox{}` (the format the prompts ask
    for); else the last "final answer is X" / "answer is X" / "ANSWER: X"; else the last number in
    the text (thousands separators removed). Later statements win because reasoning models revise
    themselves before concluding.
    """
    boxed = _boxed_contents(text)
    if boxed:
        return boxed[-1]
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        stated = _trim_stated_answer(match.group("answer"))
        if stated:
            return stated
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def _check_n_choices(n_choices: int) -> None:
    if not 1 <= n_choices <= 26:
        raise ValueError(f"n_choices must be in [1, 26], got {n_choices}")


def extract_choice_letter(text: str, n_choices: int = 4) -> str | None:
    """The choice letter an output commits to (uppercase), or None.

    In order: the last boxed letter (`\\boxed{B}`, `\\boxed{(B)}`, `\\boxed{\\text{B}}`); else the
    last "answer is (B)" / "answer: B" / "ANSWER: B"; else a text that is nothing but a letter
    ("B", "(b)"). Only the first `n_choices` letters count: a "E" on a four-choice question is
    not an answer, so the search goes on to earlier statements.
    """
    _check_n_choices(n_choices)
    allowed = {chr(ord("A") + i) for i in range(n_choices)}
    for content in reversed(_boxed_contents(text)):
        unwrapped = content
        while (inner := _LETTER_WRAPPER.sub(r"\1", unwrapped)) != unwrapped:  # nested wrappers
            unwrapped = inner
        unwrapped = unwrapped.replace("$", "").replace("*", "").strip()
        letter = _BOXED_LETTER.match(unwrapped)
        if letter and letter.group(1).upper() in allowed:
            return letter.group(1).upper()
    for match in reversed(list(_LETTER_PHRASE.finditer(text))):
        if match.group("letter") in allowed:
            return match.group("letter")
    bare = _BARE_LETTER.fullmatch(text.strip())
    if bare and bare.group(1).upper() in allowed:
        return bare.group(1).upper()
    return None


def _as_answer_type(answer_type: AnswerType | str) -> AnswerType:
    try:
        return AnswerType(answer_type)
    except ValueError:
        valid = ", ".join(repr(t.value) for t in AnswerType)
        raise ValueError(f"answer_type must be one of {valid}, got {answer_type!r}") from None


def extract_answer(
    text: str, answer_type: AnswerType | str, *, n_choices: int = 4
) -> str | None:
    """The answer `text` commits to under `answer_type`'s rules (None: unextractable)."""
    if _as_answer_type(answer_type) is AnswerType.MATH:
        return extract_math_answer(text)
    return extract_choice_letter(text, n_choices)


def extract_gold(target: str, answer_type: AnswerType | str) -> str | None:
    """The answer a gold target states, read more leniently than a model output.

    A target is usually the bare answer ("70", "\\frac{1}{2}", "B"), so a math target is taken
    whole (running the output extractor on "\\frac{1}{2}" would pick its last number, "2"), unless
    it carries a `\\boxed{}` (MATH solutions) or a GSM8K `#### 72` line. A choice target is read as
    a letter among all 26, so an out-of-range gold is never silently dropped.
    """
    if _as_answer_type(answer_type) is AnswerType.CHOICE:
        return extract_choice_letter(target, n_choices=26)
    boxed = _boxed_contents(target)
    if boxed:
        return boxed[-1]
    if "####" in target:
        target = target.rsplit("####", 1)[1]
    stripped = target.strip().strip("$").strip()
    return stripped or None


# ----------------------------------------------------------------------------------------------
# Equivalence
# ----------------------------------------------------------------------------------------------

_SPACING = re.compile(r"\\left|\\right|\\[!,;: ]|\s+")


def _normalize_math_string(answer: str) -> str:
    """A canonical string for the fallback comparison when math-verify cannot decide."""
    answer = answer.strip().strip("$")
    answer = _LETTER_WRAPPER.sub(r"\1", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = _SPACING.sub("", answer)
    return answer.rstrip(".")


def _math_timeout() -> int | None:
    return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse_math(answer: str, timeout_s: int | None) -> tuple:
    # math-verify (and sympy under it) load here, where grading happens: reading or reporting
    # outputs, whose grades are stored, never pays their ~1 s import
    from math_verify import parse

    """math-verify's parse of an extracted answer, boxed so that "70" and "\\frac{1}{2}" both parse.

    Boxing makes math-verify read the whole string as one LaTeX answer; without it, a bare
    `\\dfrac12` or `(1,2)` parses to nothing or to the last number. Cached: majority voting
    compares each answer with several others.
    """
    core = answer.strip().strip("$").strip()
    wrapped = answer if _BOX_COMMAND.search(answer) else f"\\boxed{{{core}}}"
    return tuple(parse(wrapped, parsing_timeout=timeout_s))


def is_math_equivalent(pred: str | None, gold: str) -> bool:
    """Whether an extracted math answer equals the gold one, by math-verify; never raises.

    Equal normalized strings are equivalent without asking math-verify. Otherwise math-verify
    decides (gold first: its `verify` is asymmetric, e.g. gold `x=2` accepts `2`). If it fails or
    times out, or parses either side to nothing, the normalized strings decide, so an exotic
    answer costs at worst a false "wrong", never a crashed evaluation.
    """
    if pred is None:
        return False
    pred_norm, gold_norm = _normalize_math_string(pred), _normalize_math_string(gold)
    if not pred_norm or not gold_norm:
        return False
    if pred_norm == gold_norm:
        return True
    from math_verify import verify
    from math_verify.errors import TimeoutException

    timeout_s = _math_timeout()
    try:
        gold_parsed = _parse_math(gold, timeout_s)
        pred_parsed = _parse_math(pred, timeout_s)
        if not gold_parsed or not pred_parsed:
            return False  # the strings already differ
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout_s))
    except (Exception, TimeoutException):  # TimeoutException is a BaseException
        return False  # the normalized strings already differ


def same_answer(a: str, b: str, answer_type: AnswerType | str) -> bool:
    """Whether two extracted answers are the same (majority-vote grouping; `b` acts as gold)."""
    if _as_answer_type(answer_type) is AnswerType.MATH:
        return is_math_equivalent(a, b)
    return a.strip().upper() == b.strip().upper()


def is_correct(
    text: str, target: str, answer_type: AnswerType | str, *, n_choices: int = 4
) -> bool:
    """Whether a whole generated text answers `target` correctly.

    The output's answer is extracted with `extract_answer`, the target's with `extract_gold`
    (falling back to the target itself), and they are compared with `same_answer`: the same path
    the Cons@k winner takes in `metrics.score_prompt`, so the two can never disagree.
    """
    return matches(extract_answer(text, answer_type, n_choices=n_choices),
                   gold_answer(target, answer_type), answer_type)


def gold_answer(target: str, answer_type: AnswerType | str) -> str:
    """The answer a target states (`extract_gold`), else the target itself: the one rule every
    grader reads gold answers by."""
    return extract_gold(target, answer_type) or target.strip()


def matches(prediction: str | None, gold: str, answer_type: AnswerType | str) -> bool:
    """Whether an extracted prediction is right: present, and the same answer as `gold`."""
    return prediction is not None and same_answer(prediction, gold, answer_type)


def labels_verifier(
    targets: Sequence[str | None], answer_types: Sequence[AnswerType | str] | AnswerType | str,
    *, n_choices: int | Sequence[int] = 4,
):
    """Full EAGer's verifier from gold labels: (prompt_idx, text) -> correct?

    `answer_types` and `n_choices`: one for all prompts, or one per prompt. A prompt without a
    label (None) is never 'solved', so it stays a candidate.
    """
    n = len(targets)
    types = answer_types if isinstance(answer_types, (list, tuple)) else [answer_types] * n
    choices = n_choices if isinstance(n_choices, (list, tuple)) else [n_choices] * n

    def verify(prompt_idx: int, text: str) -> bool:
        target = targets[prompt_idx]
        return target is not None and is_correct(text, target, types[prompt_idx],
                                                 n_choices=choices[prompt_idx])

    return verify
