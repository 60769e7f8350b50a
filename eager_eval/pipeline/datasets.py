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
import io
import json
import math
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from eager_eval.common.errors import UserError
from eager_eval.common.files import os_reason
from eager_eval.common.words import plural

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


class Row(dict):
    """One row of a data file (field -> value), with the line of the file it starts on."""

    def __init__(self, values: Any, line: int):
        super().__init__(values)
        self.line = line


def read_data_file(path: str | Path) -> bytes:
    """The bytes of a data file, or one DataFileError naming the path and the OS's reason
    (no permission, an I/O error, a symlink loop, a directory)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataFileError(f"data file {path} does not exist (or is not a file)") from None
    except OSError as err:
        raise DataFileError(f"cannot read data file {path}: {os_reason(err)}") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise DataFileError(f"data file {path} is {what}, not a file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataFileError(f"cannot read data file {path}: {os_reason(err)}") from None


def _text_of(path: str | Path, data: bytes, kind: str) -> str:
    """UTF-8 text (a byte-order mark, as Excel writes, is dropped), or an error naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataFileError(f"data file {path} is not UTF-8 {kind} text (line {line}): {err}; "
                            "save it as UTF-8") from None


class _DuplicateKey(ValueError):
    pass


class _NotJsonConstant(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise _NotJsonConstant(name)


def parse_jsonl(path: str | Path, data: bytes) -> list[Row]:
    """The JSON objects of JSONL bytes (blank lines skipped). Refused, naming the line: a line
    that is not JSON or not an object, a key given twice (JSON keeps the last silently) and
    NaN or Infinity (not JSON; Python's parser takes them)."""
    rows = []
    for line_no, line in enumerate(_text_of(path, data, "JSONL").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_object_without_duplicates,
                             parse_constant=_no_constant)
        except _DuplicateKey as err:
            raise DataFileError(f"{path}:{line_no} has the key {err.args[0]!r} twice (JSON would "
                                "keep the last one silently); keep one") from None
        except _NotJsonConstant as err:
            raise DataFileError(f"{path}:{line_no} holds {err.args[0]}, which is not JSON; write "
                                f"the value as text (\"{err.args[0]}\") or a number") from None
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}:{line_no} is not JSON: {err}") from None
        if not isinstance(row, dict):
            raise DataFileError(f"{path}:{line_no} is not a JSON object (it is "
                                f"{_kind(row)}); write one object a line")
        rows.append(Row(row, line_no))
    return rows


def read_jsonl(path: str | Path) -> list[Row]:
    """The JSON objects of a JSONL file (`parse_jsonl`); a bad line names its number."""
    return parse_jsonl(path, read_data_file(path))


def parse_csv(path: str | Path, data: bytes, *, strict_header: bool = True) -> list[Row]:
    """The rows of CSV bytes with a header row, as field -> text. Refused, naming the line: a
    row with more or fewer cells than the header (an unquoted comma shifts every later cell),
    and with `strict_header` a header cell that is empty or names a column twice (a reader
    would silently keep one of the two)."""
    reader = csv.reader(io.StringIO(_text_of(path, data, "CSV"), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        if strict_header:
            _check_header(path, header)
        rows: list[Row] = []
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if len(cells) != len(header):
                raise DataFileError(
                    f"{path}:{line}: row {len(rows) + 1} has {plural(len(cells), 'cell')} but "
                    f"the header has {plural(len(header), 'cell')}; quote a cell that holds a "
                    "comma, and give every row one cell per column")
            rows.append(Row(zip(header, cells), line))
    except csv.Error as err:
        raise DataFileError(f"data file {path} is not readable CSV (line {reader.line_num}): "
                            f"{err}") from None
    return rows


def _check_header(path: str | Path, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for column, name in enumerate(header, 1):
        if not name.strip():
            raise DataFileError(f"{path}:1: column {column} of the header has no name; name "
                                "it, or delete that column")
        if name in seen:
            raise DataFileError(f"{path}:1: the header names {name!r} twice (columns "
                                f"{seen[name]} and {column}); rename one")
        seen[name] = column


def _kind(value: Any) -> str:
    """A JSON value's kind in words, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "null" if value is None else type(value).__name__


def _where(path: str | Path, row: Mapping[str, Any], number: int) -> str:
    line = getattr(row, "line", None)
    return f"{path}:{line}: row {number}" if line is not None else f"{path}: row {number}"


def require_fields(path: str | Path, rows: Sequence[Mapping[str, Any]], needed: Sequence[str],
                   hint: str) -> None:
    """Every row holds every `needed` field, not null or blank."""
    for number, row in enumerate(rows, 1):
        missing = [name for name in needed if _blank(row.get(name))]
        if missing:
            raise DataFileError(f"{_where(path, row, number)} lacks field(s) {missing}; {hint}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text_field(path: str | Path, row: Mapping[str, Any], number: int, name: str) -> str:
    """A field that must be text (a problem, a question, a choice): a number, a list or an
    object there is a wrong column or a nested file, never a prompt."""
    value = row.get(name)
    if not isinstance(value, str):
        raise DataFileError(f"{_where(path, row, number)}: field {name!r} is {_kind(value)} "
                            f"({_short(value)}), not text; name the column that holds the text")
    return value


def answer_field(path: str | Path, row: Mapping[str, Any], number: int, name: str) -> str:
    """A gold answer as text: text, or an integer or finite number written as text. A list,
    an object or a boolean is refused (its Python text, '[1, 2]' or 'True', is no answer a
    grader can match)."""
    value = row.get(name)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise DataFileError(f"{_where(path, row, number)}: answer field {name!r} is "
                        f"{_kind(value)} ({_short(value)}); write one answer as text, e.g. "
                        "\"7\" or \"3/4\"")


def row_ids(path: str | Path, rows: Sequence[Mapping[str, Any]],
            fields: Sequence[str] = ("id",)) -> list[str]:
    """Each row's id (the first of `fields` it has; else its index), all distinct: two rows
    with one id would overwrite each other's records, grades and resumed trees."""
    ids: list[str] = []
    first_at: dict[str, int] = {}
    for index, row in enumerate(rows):
        name = next((f for f in fields if f in row and row[f] is not None), None)
        value = row[name] if name is not None else index
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (
                isinstance(value, str) and not value.strip()):
            raise DataFileError(f"{_where(path, row, index + 1)}: {name!r} is "
                                f"{_short(value)}; an id must be non-empty text or an integer")
        text = str(value)
        if text in first_at:
            raise DataFileError(
                f"{_where(path, row, index + 1)} has the id {text!r} of row {first_at[text] + 1}"
                f"{_line_of(rows[first_at[text]])}; every row needs its own id")
        first_at[text] = index
        ids.append(text)
    return ids


def _line_of(row: Mapping[str, Any]) -> str:
    line = getattr(row, "line", None)
    return f" (line {line})" if line is not None else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def repeated_texts(path: str | Path, rows: Sequence[Mapping[str, Any]],
                   texts: Sequence[str]) -> list[str]:
    """A warning per text that appears in more than one row (the same problem twice under two
    ids: counted twice in every metric)."""
    first: dict[str, int] = {}
    notes = []
    for index, text in enumerate(texts):
        key = " ".join(text.split())
        if key in first:
            notes.append(f"{_where(path, rows[index], index + 1)} repeats the problem of row "
                         f"{first[key] + 1}{_line_of(rows[first[key]])}; it counts twice in "
                         "every metric")
        else:
            first[key] = index
    return notes


def math_problems(path: str | Path, rows: Sequence[Mapping[str, Any]], *,
                  problem_field: str = "problem", answer_field_name: str = "answer",
                  id_fields: Sequence[str] = ("id",), hint: str = "") -> list[MathProblem]:
    """Math problems from rows: each needs a text problem and an answer; ids are distinct."""
    hint = hint or f"every line needs {problem_field!r} and {answer_field_name!r}"
    require_fields(path, rows, [problem_field, answer_field_name], hint)
    ids = row_ids(path, rows, id_fields)
    return [MathProblem(ids[i], text_field(path, row, i + 1, problem_field),
                        answer_field(path, row, i + 1, answer_field_name))
            for i, row in enumerate(rows)]


def read_math_jsonl(path: str | Path, *, problem_field: str = "problem",
                    answer_field: str = "answer") -> list[MathProblem]:
    return math_problems(path, read_jsonl(path), problem_field=problem_field,
                         answer_field_name=answer_field)


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
    return math_problems(AIME25_HUB, [Row(r, i + 1) for i, r in enumerate(rows)])


def _read_gpqa_rows(path: str | Path) -> list[dict[str, str]]:
    # the public CSV's other columns are not ours to judge: only the ones read are checked
    rows = parse_csv(path, read_data_file(path), strict_header=False)
    needed = list(GPQA_COLUMNS)
    if rows:
        missing = [c for c in needed if c not in rows[0]]
        if missing:
            raise DataFileError(f"{path} lacks column(s) {missing}: it needs the public GPQA CSV's columns {needed}")
        require_fields(path, rows, needed, f"every row needs the columns {needed}")
    row_ids(path, rows, ("Record ID",))
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
