"""YAML files validated with pydantic, every problem reported with its line and field.

Rule files and destination files are read the same way: the text is parsed,
each YAML path is mapped to its line, and pydantic's errors are turned into
:class:`Problem` s that name both.

>>> from pydantic import BaseModel
>>> class Point(BaseModel):
...     x: int
...     y: int
>>> document, lines = load_yaml("x: 1\\ny: nope\\n", "point.yaml", FileError, "a point")
>>> try:
...     Point.model_validate(document)
... except ValidationError as error:
...     print(FileError("point.yaml", problems(error, lines)))
point.yaml: 1 error(s)
  line 2, y: Input should be a valid integer, unable to parse string as an integer
>>> load_yaml("", "point.yaml", FileError, "a point is a mapping with x and y")
Traceback (most recent call last):
...
processors.yaml_files.FileError: point.yaml is empty: a point is a mapping with x and y
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

Path = tuple[str | int, ...]
"""Where a value is in a YAML document: its keys and list indexes."""


@dataclass(frozen=True)
class Problem:
    """One problem in a file: where it is and what is wrong."""

    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line is not None else ""
        return f"{where}{self.field}: {self.message}"


_DOCUMENT = "(document)"
"""The field of a problem with the whole file, which is told in one sentence."""


class FileError(ValueError):
    """A file that cannot be used; `errors` lists every problem."""

    def __init__(self, source: str, errors: Sequence[Problem]) -> None:
        self.source = source
        self.errors = list(errors)
        if len(self.errors) == 1 and self.errors[0].field == _DOCUMENT:
            super().__init__(f"{source} {self.errors[0].message}")
            return
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"{source}: {len(self.errors)} error(s)\n{lines}")


def load_yaml(
    text: str, source: str, error: type[FileError], shape: str
) -> tuple[dict[str, Any], dict[Path, int]]:
    """The document in `text` and the line of each of its paths; raises `error` when the
    text is not YAML, or is empty or not a mapping (saying that the file should be
    `shape`)."""
    try:
        document, lines = yaml.safe_load(text), _line_index(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = getattr(problem, "problem", None) or str(problem)
        raise error(source, [Problem(line, "(yaml)", detail)]) from None
    if not isinstance(document, dict):
        what = "is empty" if document is None else "is not a YAML mapping"
        raise error(source, [Problem(None, _DOCUMENT, f"{what}: {shape}")])
    return document, lines


def problems(
    error: ValidationError,
    lines: dict[Path, int],
    document_path: Callable[[tuple[str | int, ...]], list[str | int]] = list,
) -> list[Problem]:
    """pydantic's errors as problems; `document_path` turns an error's location into the
    path in the document (where a model adds parts the document does not have)."""
    found = []
    for item in error.errors(include_url=False):
        path = document_path(item["loc"])
        line = line_of(lines, *path)
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        found.append(Problem(line, field or "(document)", message))
    return found


def line_of(lines: dict[Path, int], *path: str | int) -> int | None:
    """The line of `path`, or of its nearest enclosing value."""
    for end in range(len(path), -1, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


def _line_index(text: str) -> dict[Path, int]:
    """Map each YAML path (keys and list indexes) to its 1-based line."""
    lines: dict[Path, int] = {}

    def walk(node: yaml.Node, path: Path) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines
