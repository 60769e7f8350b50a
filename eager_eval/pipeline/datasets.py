"""The benchmark sets the tasks use (AIME 2025, GPQA-Diamond), from a local directory or online.

With EAGER_EVAL_DATA_DIR set, files are read from there and nothing is downloaded:
`aime25.jsonl` (fields `id`, `problem`, `answer`) and `gpqa_diamond.csv` (the public GPQA CSV's
columns `Question`, `Correct Answer`, `Incorrect Answer 1..3`). Without it, AIME 2025 comes from
the Hub (`math-ai/aime25`) and GPQA-Diamond from the public CSV inspect_evals uses. GPQA content
is never stored in this repository: tests write GPQA-shaped fixtures of their own.

One module for both harnesses, so lm-eval and Inspect see the same questions, the same choice
order and the same prompts.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from eager_eval.common.errors import UserError

DATA_DIR_ENV = "EAGER_EVAL_DATA_DIR"
AIME25_HUB = "math-ai/aime25"
GPQA_DIAMOND_URL = "https://openaipublic.blob.core.windows.net/simple-evals/gpqa_diamond.csv"
GPQA_SHUFFLE_SEED = 0
"""Choices are shuffled once per question with Random(seed + question index): fixed order."""

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Answer the following multiple choice question. Think step by step, then give your final "
    "answer as the letter of the correct choice within \\boxed{}, e.g. \\boxed{A}."
)
LETTERS = "ABCD"


class DataFileError(FileNotFoundError, UserError):
    """A data file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class MathProblem:
    id: str
    problem: str
    answer: str

    @property
    def prompt(self) -> str:
        return f"{self.problem}\n\n{MATH_INSTRUCTION}"


@dataclass(frozen=True)
class ChoiceQuestion:
    id: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str
    """The letter of the correct choice after the fixed shuffle."""

    @property
    def prompt(self) -> str:
        options = "\n".join(f"{letter}) {text}" for letter, text in zip(LETTERS, self.choices))
        return f"{CHOICE_INSTRUCTION}\n\n{self.question}\n\n{options}"


def data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


GPQA_COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                "Incorrect Answer 3")
"""The public GPQA CSV's columns the loader reads (the file has more; they are ignored)."""

_FILE_HINTS = {
    "aime25.jsonl": "one JSON object a line with fields id, problem, answer",
    "gpqa_diamond.csv": (f"the public GPQA-Diamond CSV, 198 rows, from {GPQA_DIAMOND_URL}; "
                         f"columns {', '.join(GPQA_COLUMNS)}"),
}
"""What each local file is and where it comes from: said in the one-line error when missing."""


def _local_file(name: str) -> Path | None:
    directory = data_dir()
    if directory is None:
        return None
    path = directory / name
    if not path.is_file():
        raise DataFileError(
            f"{DATA_DIR_ENV}={directory} has no {name} ({_FILE_HINTS[name]}): put it there, "
            f"or unset {DATA_DIR_ENV} to download it"
        )
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file (blank lines skipped); a bad line names its number."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFileError(f"{path}:{line_no} is not JSON: {err}") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{path}:{line_no} is not a JSON object")
            rows.append(row)
    return rows


def read_math_jsonl(path: str | Path, *, problem_field: str = "problem",
                    answer_field: str = "answer") -> list[MathProblem]:
    problems = []
    for i, row in enumerate(read_jsonl(path)):
        missing = [f for f in (problem_field, answer_field) if f not in row]
        if missing:
            raise DataFileError(f"{path}: row {i + 1} lacks field(s) {missing}: every line needs "
                                f"{problem_field!r} and {answer_field!r}")
        problems.append(MathProblem(str(row.get("id", i)), str(row[problem_field]),
                                    str(row[answer_field])))
    return problems


def load_aime25() -> list[MathProblem]:
    """AIME 2025 (30 problems): $EAGER_EVAL_DATA_DIR/aime25.jsonl, else the Hub."""
    local = _local_file("aime25.jsonl")
    if local is not None:
        return read_math_jsonl(local)
    try:
        import datasets

        rows = datasets.load_dataset(AIME25_HUB, split="test")
    except Exception as err:  # offline, hub errors: one clear message
        raise DataFileError(
            f"could not load {AIME25_HUB} from the Hub ({type(err).__name__}: {err}); offline, set "
            f"{DATA_DIR_ENV} to a directory holding aime25.jsonl"
        ) from None
    return [MathProblem(str(r.get("id", i)), r["problem"], str(r["answer"])) for i, r in enumerate(rows)]


def _read_gpqa_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    needed = list(GPQA_COLUMNS)
    if rows:
        missing = [c for c in needed if c not in rows[0]]
        if missing:
            raise DataFileError(f"{path} lacks column(s) {missing}: it needs the public GPQA CSV's columns {needed}")
    return rows


def gpqa_questions(rows: list[dict[str, str]], seed: int = GPQA_SHUFFLE_SEED) -> list[ChoiceQuestion]:
    """Shuffle each question's choices with its own fixed RNG: same order on every run."""
    out = []
    for i, row in enumerate(rows):
        correct = row["Correct Answer"].strip()
        choices = [correct] + [row[f"Incorrect Answer {j}"].strip() for j in (1, 2, 3)]
        random.Random(seed + i).shuffle(choices)
        out.append(ChoiceQuestion(str(row.get("Record ID") or i), row["Question"].strip(),
                                  tuple(choices), LETTERS[choices.index(correct)]))
    return out


def load_gpqa_diamond(seed: int = GPQA_SHUFFLE_SEED) -> list[ChoiceQuestion]:
    """GPQA-Diamond (198): $EAGER_EVAL_DATA_DIR/gpqa_diamond.csv, else the public CSV."""
    local = _local_file("gpqa_diamond.csv")
    if local is None:
        try:
            import urllib.request

            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eager-eval" / "gpqa_diamond.csv"
            if not cache.is_file():
                cache.parent.mkdir(parents=True, exist_ok=True)
                urllib.request.urlretrieve(GPQA_DIAMOND_URL, cache)  # noqa: S310 (fixed https URL)
            local = cache
        except Exception as err:
            raise DataFileError(
                f"could not download GPQA-Diamond from {GPQA_DIAMOND_URL} "
                f"({type(err).__name__}: {err}); offline, copy that CSV (columns "
                f"{', '.join(GPQA_COLUMNS)}) to DIR/gpqa_diamond.csv and set {DATA_DIR_ENV}=DIR"
            ) from None
    return gpqa_questions(_read_gpqa_rows(local), seed)
