"""The prompts of an `eager-eval run` or `demo`: a data file or the demo's problems -> a `Task`.

A task is what the CLI shows (the problems), what it sends (each problem's prompt text, which
`eager_eval.pipeline.prompts` turns into token ids), what it grades against (the targets), and what
identifies the prompts for a resume (a fingerprint of the data). The tasks' prompts are the
shared ones of `eager_eval.pipeline.datasets` (`MathProblem.prompt`, `ChoiceQuestion.prompt`), so a
problem reads the same here as in the lm-eval and Inspect tasks.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from eager_eval.pipeline.datasets import DataFileError, read_jsonl

if TYPE_CHECKING:
    from eager_eval.pipeline.outputs import Problem

__all__ = ["Task", "load_data_task", "load_demo_task"]


@dataclass
class Task:
    """The prompts of one command: what to show, what to send, what to grade against."""

    name: str
    problems: list["Problem"]
    prompt_texts: list[str]
    """What goes into the chat template (question plus answer instruction)."""
    answer_type: str
    fingerprint: dict[str, Any]
    """What identifies these prompts for a resume (data hash, fields, limit...)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Written to results.json under "data"."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl (one object a line) or .csv (header row) file."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise DataFileError(f"data file {path} must be .jsonl or .csv, got {suffix or 'no suffix'!r}")
    try:
        return _read_csv(path) if suffix == ".csv" else read_jsonl(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataFileError(f"data file {path} is not UTF-8 {suffix[1:].upper()} text: {err}") from None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))



def _require_fields(path: Path, rows: list[dict[str, Any]], needed: Sequence[str], hint: str) -> None:
    for number, row in enumerate(rows, 1):
        missing = [name for name in needed if row.get(name) in (None, "")]
        if missing:
            raise DataFileError(f"{path}: row {number} lacks field(s) {missing}; {hint}")


def load_data_task(path_text: str, answer_type: str, problem_field: str | None,
                   answer_field: str, limit: int | None) -> Task:
    """A `run` task from a JSONL/CSV file: math (problem, answer) or choice (question, A-D,
    answer letter)."""
    from eager_eval.pipeline.datasets import LETTERS, ChoiceQuestion, MathProblem
    from eager_eval.pipeline.outputs import Problem

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataFileError(f"data file {path_text} does not exist (or is not a file)")
    rows = _read_rows(path)
    if not rows:
        raise DataFileError(f"data file {path} holds no rows")
    if limit is not None:
        rows = rows[:limit]
    problems, prompts = [], []
    if answer_type == "math":
        problem_field = problem_field or "problem"
        _require_fields(path, rows, [problem_field, answer_field],
                        "pass --problem-field/--answer-field to name the columns to use")
        for i, row in enumerate(rows):
            item = MathProblem(str(row.get("id", row.get("unique_id", i))),
                               str(row[problem_field]), str(row[answer_field]))
            problems.append(Problem(item.id, item.problem, item.answer))
            prompts.append(item.prompt)
    else:
        question_field = problem_field or "question"
        needed = [question_field, *LETTERS, answer_field]
        _require_fields(path, rows, needed,
                        f"a choice file needs columns {needed} (answer = the correct letter)")
        for i, row in enumerate(rows):
            letter = str(row[answer_field]).strip().strip("()").upper()
            if letter not in LETTERS:
                raise DataFileError(f"{path}: row {i + 1} has answer {row[answer_field]!r}; "
                                    f"it must be one of the letters {', '.join(LETTERS)}")
            item = ChoiceQuestion(str(row.get("id", i)), str(row[question_field]).strip(),
                                  tuple(str(row[c]).strip() for c in LETTERS), letter)
            problems.append(Problem(item.id, item.prompt, item.answer))
            prompts.append(item.prompt)
    info = {"path": str(path.resolve()), "sha256": _file_sha256(path), "answer_type": answer_type,
            "problem_field": problem_field, "answer_field": answer_field, "limit": limit,
            "n_prompts": len(problems)}
    fingerprint = {"data_sha256": info["sha256"], "answer_type": answer_type,
                   "problem_field": problem_field, "answer_field": answer_field,
                   "n_prompts": len(problems)}
    return Task(path.stem, problems, prompts, answer_type, fingerprint, info)


def load_demo_task(limit: int, problem_seed: int) -> Task:
    from eager_eval.pipeline.demo_problems import demo_problems
    from eager_eval.pipeline.outputs import Problem

    items = demo_problems(limit, problem_seed)
    problems = [Problem(p.id, p.problem, p.answer) for p in items]
    fingerprint = {"data": "demo_problems", "problem_seed": problem_seed, "n_prompts": len(items)}
    info = {"source": "eager_eval.pipeline.demo_problems", "problem_seed": problem_seed,
            "levels": [p.level for p in items], "n_prompts": len(items)}
    return Task("demo", problems, [p.problem for p in items], "math", fingerprint, info)
