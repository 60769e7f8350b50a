"""Pins eager_eval/pipeline/demo_problems.py: deterministic, correct, level-mixed, prefix-stable."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from eager_eval.pipeline.demo_problems import DEFAULT_COUNT, DemoProblem, demo_problems

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expression: str) -> int:
    """Evaluate + - * over integer literals, nothing else (independent of the generator)."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise AssertionError(f"unexpected syntax in {expression!r}: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval"))


def test_default_count_and_fields():
    problems = demo_problems()
    assert len(problems) == DEFAULT_COUNT == 12
    assert all(isinstance(p, DemoProblem) for p in problems)
    assert len({p.id for p in problems}) == len(problems)
    assert len({p.problem for p in problems}) == len(problems)


def test_same_seed_same_problems_other_seed_differs():
    assert demo_problems(seed=3) == demo_problems(seed=3)
    assert [p.problem for p in demo_problems(seed=0)] != [p.problem for p in demo_problems(seed=1)]
    assert {p.id for p in demo_problems(seed=0)}.isdisjoint(p.id for p in demo_problems(seed=1))


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_answers_are_correct(seed):
    for p in demo_problems(limit=40, seed=seed):
        assert p.answer == str(_evaluate(p.expression)), p
        numbers = [int(n) for n in re.findall(r"\d+", p.expression)]
        assert tuple(numbers) == p.operands
        story_numbers = [int(n) for n in re.findall(r"\d+", p.problem)]
        assert tuple(story_numbers) == p.operands, "the story states exactly its operands, in order"
        assert int(p.answer) > 0
        assert int(p.answer) not in p.operands, "copying a number from the story must not score"


def test_prompt_asks_for_boxed_answer():
    for p in demo_problems():
        assert p.problem.rstrip().endswith("\\boxed{}.")


def test_limit_is_a_prefix_and_mixes_levels_easy_first():
    full = demo_problems(limit=20, seed=5)
    for limit in (0, 1, 4, 12):
        assert demo_problems(limit=limit, seed=5) == full[:limit]
    assert [p.level for p in demo_problems(limit=4)] == [1, 2, 3, 4]
    assert [p.level for p in demo_problems(limit=8)] == [1, 2, 3, 4, 1, 2, 3, 4]


def test_difficulty_grows_with_level():
    problems = demo_problems(limit=80)
    by_level = {level: [p for p in problems if p.level == level] for level in (1, 2, 3, 4)}
    assert all(a < 10 and b < 10 for p in by_level[1] for a, b in [p.operands])
    assert all(p.expression.count(" ") == 2 for level in (1, 2, 3) for p in by_level[level])
    assert all(len(p.operands) == 3 for p in by_level[4]), "level 4 is two steps"


@pytest.mark.parametrize("limit", [-1, 2.5, "4", True])
def test_bad_limit_is_rejected(limit):
    with pytest.raises(ValueError, match="limit must be"):
        demo_problems(limit=limit)
