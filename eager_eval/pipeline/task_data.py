"""The prompts of an `eager-eval run` or `demo`: a data file or the demo's problems -> a `Task`.

A task is what the CLI shows (the problems), what it sends (each problem's prompt text, which
`eager_eval.pipeline.prompts` turns into token ids), what it grades against (the targets), and what
identifies the prompts for a resume (a fingerprint of the data). The tasks' prompts are the
shared ones of `eager_eval.pipeline.datasets` (`MathProblem.prompt`, `ChoiceQuestion.prompt`), so a
problem reads the same here as in the lm-eval and Inspect tasks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eager_eval.pipeline.datasets import (
    DataFileError,
    Row,
    answer_field as answer_value,
    math_problems,
    parse_csv,
    parse_jsonl,
    read_data_file,
    repeated_texts,
    require_fields,
    row_ids,
    text_field,
)

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
    warnings: list[str] = field(default_factory=list)
    """What in the data was accepted but is worth a look (a problem given twice): the front
    end shows each before the run."""


def _read_rows(path: Path) -> tuple[list[Row], str]:
    """(rows, sha256 of the bytes read) of a .jsonl (one object a line) or .csv (header row)
    file, read once: the hash names exactly the rows that ran."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise DataFileError(f"data file {path} must be .jsonl or .csv, got {suffix or 'no suffix'!r}")
    data = read_data_file(path)
    rows = parse_csv(path, data) if suffix == ".csv" else parse_jsonl(path, data)
    return rows, hashlib.sha256(data).hexdigest()


def _field_name(name: str | None, option: str) -> str | None:
    if name is not None and not name.strip():
        raise DataFileError(f"{option} is empty; give the name of a column of the data file "
                            "(or leave the option out for its default)")
    return name


def load_data_task(path_text: str, answer_type: str, problem_field: str | None,
                   answer_field: str, limit: int | None) -> Task:
    """A `run` task from a JSONL/CSV file: math (problem, answer) or choice (question, A-D,
    answer letter). Every row is checked (not only the first `limit`): fields of the right
    kind, distinct ids; the same problem twice is a warning (`Task.warnings`)."""
    from eager_eval.pipeline.datasets import LETTERS, ChoiceQuestion
    from eager_eval.pipeline.outputs import Problem

    if not str(path_text).strip():
        raise DataFileError("--data is empty; give a .jsonl or .csv file")
    _field_name(problem_field, "--problem-field")
    _field_name(answer_field, "--answer-field")
    path = Path(path_text).expanduser()
    rows, sha256 = _read_rows(path)
    if not rows:
        raise DataFileError(f"data file {path} holds no rows")
    problems, prompts = [], []
    if answer_type == "math":
        problem_field = problem_field or "problem"
        items = math_problems(path, rows, problem_field=problem_field,
                              answer_field_name=answer_field, id_fields=("id", "unique_id"),
                              hint="pass --problem-field/--answer-field to name the columns to use")
        notes = repeated_texts(path, rows, [item.problem for item in items])
        for item in items[:limit]:
            problems.append(Problem(item.id, item.problem, item.answer))
            prompts.append(item.prompt)
    else:
        question_field = problem_field or "question"
        needed = [question_field, *LETTERS, answer_field]
        require_fields(path, rows, needed,
                       f"a choice file needs columns {needed} (answer = the correct letter)")
        ids = row_ids(path, rows)
        questions = []
        for i, row in enumerate(rows):
            answer = answer_value(path, row, i + 1, answer_field)
            letter = answer.strip().strip("()").upper()
            if letter not in LETTERS:
                raise DataFileError(f"{path}: row {i + 1} has answer {row[answer_field]!r}; "
                                    f"it must be one of the letters {', '.join(LETTERS)}")
            questions.append(ChoiceQuestion(
                ids[i], text_field(path, row, i + 1, question_field).strip(),
                tuple(text_field(path, row, i + 1, c).strip() for c in LETTERS), letter))
        notes = repeated_texts(path, rows, [q.prompt for q in questions])
        for item in questions[:limit]:
            problems.append(Problem(item.id, item.prompt, item.answer))
            prompts.append(item.prompt)
    info = {"path": str(path.resolve()), "sha256": sha256, "answer_type": answer_type,
            "problem_field": problem_field, "answer_field": answer_field, "limit": limit,
            "n_prompts": len(problems)}
    fingerprint = {"data_sha256": info["sha256"], "answer_type": answer_type,
                   "problem_field": problem_field, "answer_field": answer_field,
                   "n_prompts": len(problems)}
    return Task(path.stem, problems, prompts, answer_type, fingerprint, info, notes)


def load_demo_task(limit: int, problem_seed: int) -> Task:
    from eager_eval.pipeline.demo_problems import demo_problems
    from eager_eval.pipeline.outputs import Problem

    items = demo_problems(limit, problem_seed)
    problems = [Problem(p.id, p.problem, p.answer) for p in items]
    fingerprint = {"data": "demo_problems", "problem_seed": problem_seed, "n_prompts": len(items)}
    info = {"source": "eager_eval.pipeline.demo_problems", "problem_seed": problem_seed,
            "levels": [p.level for p in items], "n_prompts": len(items)}
    return Task("demo", problems, [p.problem for p in items], "math", fingerprint, info)
