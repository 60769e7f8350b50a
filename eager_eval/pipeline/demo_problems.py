"""A small offline math set for the demo: arithmetic word problems generated here, not copied.

Four levels, easy to harder, sized for SmolLM2-135M sampled at temperature ~0.6-1.0: it solves
level 1 some of the time and level 4 rarely, so Pass@k visibly grows with k and EAGer has
something to branch on. Problems cycle through the levels (1, 2, 3, 4, 1, 2, ...), so any
`limit` gives a mix, easiest first. Every problem is built from its own random stream
(`seed`, index): a shorter list is always a prefix of a longer one with the same seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

DEFAULT_COUNT = 12
"""Problems returned when no limit is given: three rounds of the four levels."""

LEVELS = (1, 2, 3, 4)

ANSWER_INSTRUCTION = "Give the final answer as a number in \\boxed{}."
"""Appended to every problem: the answer extractor reads the last \\boxed{...}."""

_NAMES = ("Ana", "Ben", "Cleo", "Dev", "Emma", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kai", "Lena")
_ITEMS = ("apples", "pencils", "marbles", "stickers", "cookies", "books", "shells", "coins")


@dataclass(frozen=True)
class DemoProblem:
    """One generated problem; `operands` and `expression` let a test recompute `answer`."""

    id: str
    problem: str
    """The prompt text, ending with the \\boxed{} instruction."""
    answer: str
    """The integer answer, as text (what appears inside \\boxed{})."""
    level: int
    """1 = single-digit addition ... 4 = two-step problem."""
    operands: tuple[int, ...]
    """The numbers of the story, in the order they appear in the text."""
    expression: str
    """The arithmetic the story asks for, over `operands` in order (e.g. '5 + 3 * 4')."""


def demo_problems(limit: int | None = None, seed: int = 0) -> list[DemoProblem]:
    """`limit` problems (DEFAULT_COUNT if None), levels interleaved 1, 2, 3, 4, 1, ...

    Deterministic for a seed; different seeds give different numbers, names and objects.
    """
    if limit is None:
        limit = DEFAULT_COUNT
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0 or None, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return [_make_problem(index, seed) for index in range(limit)]


def _make_problem(index: int, seed: int) -> DemoProblem:
    level = LEVELS[index % len(LEVELS)]
    rng = random.Random(f"eager-eval-demo:{seed}:{index}")  # str seeds hash stably (sha512)
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    template = rng.choice(_TEMPLATES[level])
    while True:  # an answer equal to a number of the story would reward copying that number
        story, operands, expression, answer = template(rng, name, item)
        if answer not in operands:
            break
    return DemoProblem(
        id=f"demo-s{seed}-{index:03d}",
        problem=f"{story} {ANSWER_INSTRUCTION}",
        answer=str(answer),
        level=level,
        operands=operands,
        expression=expression,
    )


Story = tuple[str, tuple[int, ...], str, int]
"""(text, operands in text order, expression over them, answer)."""


def _add_more(rng: random.Random, name: str, item: str) -> Story:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    text = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
    return text, (a, b), f"{a} + {b}", a + b


def _add_two_boxes(rng: random.Random, name: str, item: str) -> Story:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    text = f"One box has {a} {item} and another box has {b} {item}. How many {item} are there in total?"
    return text, (a, b), f"{a} + {b}", a + b


def _take_away(rng: random.Random, name: str, item: str) -> Story:
    a, b = rng.randint(11, 19), rng.randint(2, 9)
    text = f"{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?"
    return text, (a, b), f"{a} - {b}", a - b


def _add_tens(rng: random.Random, name: str, item: str) -> Story:
    a, b = rng.randint(11, 29), rng.randint(11, 29)
    text = f"{name} found {a} {item} on Monday and {b} {item} on Tuesday. How many {item} did {name} find?"
    return text, (a, b), f"{a} + {b}", a + b


def _groups_of(rng: random.Random, name: str, item: str) -> Story:
    a, b = rng.randint(2, 6), rng.randint(2, 9)
    text = f"There are {a} bags. Each bag holds {b} {item}. How many {item} are there in all?"
    return text, (a, b), f"{a} * {b}", a * b


def _rows_of(rng: random.Random, name: str, item: str) -> Story:
    a, b = rng.randint(2, 6), rng.randint(2, 9)
    text = f"{name} puts {item} in {a} rows with {b} {item} in each row. How many {item} is that?"
    return text, (a, b), f"{a} * {b}", a * b


def _has_then_buys_groups(rng: random.Random, name: str, item: str) -> Story:
    a, b, c = rng.randint(2, 9), rng.randint(2, 5), rng.randint(2, 6)
    text = (
        f"{name} has {a} {item}. {name} buys {b} packs with {c} {item} in each pack. "
        f"How many {item} does {name} have now?"
    )
    return text, (a, b, c), f"{a} + {b} * {c}", a + b * c


def _gives_then_gets(rng: random.Random, name: str, item: str) -> Story:
    a, b, c = rng.randint(10, 20), rng.randint(2, 9), rng.randint(2, 9)
    text = (
        f"{name} has {a} {item}. {name} gives away {b} {item} and then gets {c} new {item}. "
        f"How many {item} does {name} have now?"
    )
    return text, (a, b, c), f"{a} - {b} + {c}", a - b + c


_TEMPLATES: dict[int, tuple[Callable[[random.Random, str, str], Story], ...]] = {
    1: (_add_more, _add_two_boxes),
    2: (_take_away, _add_tens),
    3: (_groups_of, _rows_of),
    4: (_has_then_buys_groups, _gives_then_gets),
}
