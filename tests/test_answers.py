"""Pins eager_eval/pipeline/answers.py: extraction order, math-verify equivalence, letters, boundary."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from eager_eval.pipeline.answers import (
    AnswerType,
    extract_answer,
    extract_choice_letter,
    extract_gold,
    extract_math_answer,
    is_correct,
    is_math_equivalent,
    same_answer,
)

# ---------------------------------------------------------------------------------------------
# Math extraction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"first \boxed{3}, on reflection \boxed{70}", "70"),
        (r"nested \boxed{\sqrt{\frac{1}{4}}} here", r"\sqrt{\frac{1}{4}}"),
        (r"$\boxed 5$", "5"),
        (r"\fbox{12}", "12"),
    ],
)
def test_math_takes_last_boxed(text, expected):
    assert extract_math_answer(text) == expected


def test_math_skips_a_box_cut_off_by_max_tokens():
    assert extract_math_answer(r"\boxed{12} then \boxed{\frac{1}{") == "12"


def test_math_boxed_beats_stated_and_numbers():
    assert extract_math_answer(r"The answer is 3. Hmm, \boxed{4}. Also 99.") == "4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The final answer is 42.", "42"),
        ("so the answer is: 0.5.", "0.5"),
        (r"The answer is $\frac{3}{4}$, done", r"\frac{3}{4}"),
        ("ANSWER: 17", "17"),
        ("**Final Answer:** 9", "9"),
        ("I think the answer is 70. Let me check 71 once more", "70"),
        ("The answer is 5.\nWait, no. The answer is 6.", "6"),
    ],
)
def test_math_stated_answer_last_occurrence(text, expected):
    assert extract_math_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("she has 3 apples, then 1,250 apples", "1250"),
        ("x is -4", "-4"),
        ("5-3", "3"),
        ("about 3/4 of them", "3/4"),
        ("2.5 and then 7.25", "7.25"),
    ],
)
def test_math_falls_back_to_last_number(text, expected):
    assert extract_math_answer(text) == expected


def test_math_nothing_to_extract():
    assert extract_math_answer("no idea at all") is None
    assert extract_math_answer("") is None


# ---------------------------------------------------------------------------------------------
# Math equivalence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.5", r"\frac{1}{2}"),
        ("1/2", r"\frac{1}{2}"),
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac12", "1/2"),
        ("70", "70"),
        ("70.0", "70"),
        ("1000", "1,000"),
        (r"2^{1/2}", r"\sqrt{2}"),
        ("$70$", "70"),
    ],
)
def test_math_equivalent_forms_accepted(pred, gold):
    assert is_math_equivalent(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("71", "70"),
        ("0.49", r"\frac{1}{2}"),
        (r"\frac{1}{3}", "0.5"),
        ("x", "5"),
        (None, "5"),
        ("", "5"),
    ],
)
def test_math_wrong_answers_rejected(pred, gold):
    assert not is_math_equivalent(pred, gold)


def test_math_equivalence_never_raises_on_garbage():
    for pred in [r"\frac{", "}}}{{{", r"\boxed{", "x^^2", r"\begin{matrix}", "\x00"]:
        assert is_math_equivalent(pred, "2") in (True, False)


def test_math_equivalence_works_off_the_main_thread():
    # math-verify's signal-based timeout raises outside the main thread unless disabled
    results: list[object] = []

    def grade() -> None:
        try:
            results.append(is_math_equivalent("0.25", r"\frac{1}{4}"))
        except BaseException as err:  # noqa: BLE001 - the test reports it
            results.append(err)

    worker = threading.Thread(target=grade)
    worker.start()
    worker.join()
    assert results == [True]


def test_math_whole_text_graded_against_target():
    assert is_correct(r"Adding up, we get $\boxed{70}$.", "70", AnswerType.MATH)
    assert is_correct("so the answer is 0.5", r"\frac{1}{2}", "math")
    assert not is_correct(r"we get $\boxed{71}$", "70", AnswerType.MATH)
    assert not is_correct("I give up", "70", AnswerType.MATH)


def test_math_gold_taken_whole_not_by_last_number():
    # the output extractor would read "\frac{1}{2}" as its last number, 2
    assert extract_gold(r"\frac{1}{2}", AnswerType.MATH) == r"\frac{1}{2}"
    assert not is_correct(r"\boxed{2}", r"\frac{1}{2}", AnswerType.MATH)


def test_math_gold_from_boxed_solution_or_gsm8k_line():
    assert extract_gold(r"Thus the sum is $\boxed{15}$.", AnswerType.MATH) == "15"
    assert extract_gold("She pays 3 * 24 = 72.\n#### 72", AnswerType.MATH) == "72"
    assert is_correct(r"\boxed{72}", "She pays 3 * 24 = 72.\n#### 72", AnswerType.MATH)


# ---------------------------------------------------------------------------------------------
# Choice letters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{B}", "B"),
        (r"$\boxed{(C)}$", "C"),
        (r"\boxed{\text{D}}", "D"),
        (r"\boxed{\textbf{a}}", "A"),
        ("The answer is (B).", "B"),
        ("The correct answer is **C**", "C"),
        ("answer: C", "C"),
        ("ANSWER: A", "A"),
        ("The answer is option D", "D"),
        ("(b)", "B"),
        ("C", "C"),
    ],
)
def test_choice_letter_phrasings(text, expected):
    assert extract_choice_letter(text) == expected


def test_choice_last_statement_wins():
    assert extract_choice_letter("The answer is (A). Hmm, no. The answer is (C).") == "C"


def test_choice_boxed_beats_stated():
    assert extract_choice_letter(r"ANSWER: A ... so finally \boxed{B}") == "B"


def test_choice_letter_must_be_among_n_choices():
    assert extract_choice_letter("The answer is E") is None
    assert extract_choice_letter("The answer is E", n_choices=5) == "E"
    # an out-of-range box does not hide an earlier valid statement
    assert extract_choice_letter(r"answer: B, or maybe \boxed{F}") == "B"


def test_choice_lowercase_word_is_not_a_letter():
    assert extract_choice_letter("the answer is a bit unclear") is None


def test_choice_n_choices_out_of_range_raises():
    with pytest.raises(ValueError, match="n_choices"):
        extract_choice_letter("B", n_choices=0)


def test_choice_graded_by_exact_letter():
    assert is_correct("Therefore the answer is (B).", "B", AnswerType.CHOICE)
    assert is_correct(r"\boxed{b}", "(B)", "choice")
    assert not is_correct("The answer is (C).", "B", AnswerType.CHOICE)
    assert same_answer("B", "b", AnswerType.CHOICE)
    assert not same_answer("B", "C", AnswerType.CHOICE)


def test_extract_answer_dispatches_on_type():
    text = r"\boxed{C}, i.e. 12 apples"
    assert extract_answer(text, AnswerType.CHOICE) == "C"
    assert extract_answer(text, AnswerType.MATH) == "C"
    assert extract_answer("12 apples", AnswerType.MATH) == "12"
    with pytest.raises(ValueError, match="answer_type"):
        extract_answer(text, "essay")


def test_same_answer_math_uses_equivalence():
    assert same_answer("0.5", r"\frac{1}{2}", AnswerType.MATH)
    assert not same_answer("0.5", "2", AnswerType.MATH)


# ---------------------------------------------------------------------------------------------
# Boundary
# ---------------------------------------------------------------------------------------------


def test_core_imports_no_heavy_stack():
    heavy = ["torch", "transformers", "vllm", "lm_eval", "inspect_ai"]
    code = (
        "import sys, eager_eval.pipeline.answers, eager_eval.pipeline.metrics; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"importing answers/metrics loaded: {loaded}"


def test_a_stated_number_followed_by_prose_is_the_number():
    assert extract_math_answer("so the answer is 2 in this context, as we only need two") == "2"
    assert extract_math_answer("The answer is 1,000 apples in total") == "1000"
    assert extract_math_answer("the answer is x + 1") == "x + 1"
