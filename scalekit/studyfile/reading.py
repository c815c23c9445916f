"""Reading study files: the strict YAML loader, and every validation problem as one line naming its field.

``load_study_config(path)`` reads a study file into a :class:`~scalekit.studyfile.models.StudyConfig` or raises
:class:`~scalekit.studyfile.models.StudyConfigError` listing every problem; ``read_yaml`` refuses repeated keys and
names the file (and line) in every error; ``study_problems`` lists the problems of a parsed document.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .models import RAY_SECTION_NOTE, StudyConfig, StudyConfigError
from scalekit.records import StudyDir

log = logging.getLogger(__name__)


_HINTS = {
    "missing": "this field is required",
    "extra_forbidden": "unknown field: check its spelling against the documented study format",
    "int_type": "a whole number such as 2, without quotes; true and false are not numbers",
    "float_type": "a number such as 0.001, without quotes; true and false are not numbers",
    "bool_type": "true or false",
    "finite_number": ".inf and .nan are not allowed",
    "less_than_equal": "a sanity limit far above any real study: check the value for a typo",
}
_FIELD_HINTS = {
    ("dataset.id", "less_than_equal"): "nnU-Net dataset ids have three digits, 1 to 999",
}
"""Hints for one field where the hint of the error type does not fit (``dataset.id``'s bound is nnU-Net's)."""
_SHOW_INPUT = {"int_type", "float_type", "bool_type", "string_type", "tuple_type", "finite_number", "literal_error",
               "less_than_equal", "greater_than_equal", "less_than", "greater_than"}
_UNION_MEMBER = re.compile(r"(?:constrained-)?(?:int|float|str|bool)|[a-z]+\[.*\]")
"""How pydantic names the members of a union (``int``, ``constrained-int``, ``literal['all']``) in a location."""


def _field_path(loc: tuple[Any, ...]) -> str:
    """The field a location points at, cut before the first union member."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, str) and _UNION_MEMBER.fullmatch(part):
            break
        parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _format_errors(errors: list[ErrorDetails]) -> list[str]:
    """One line per field: ``field.path: message, got value (hint)``; a union's failed members share a line."""
    by_field: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        by_field.setdefault(_field_path(error["loc"]), []).append(error)
    lines = []
    for path, group in by_field.items():
        first = group[0]
        messages = list(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in group))
        message = " or ".join([messages[0], *(m.removeprefix("Input should be ") for m in messages[1:])])
        if any(e["type"] in _SHOW_INPUT for e in group):
            message += f", got {first['input']!r}"
        hint = _FIELD_HINTS.get((path, first["type"]), _HINTS.get(first["type"], ""))
        lines.append(f"{path}: {message}" + (f" ({hint})" if hint and hint not in message else ""))
    return lines


def study_problems(data: Any) -> list[str]:
    """Every problem of a parsed study document, each as ``field.path: message (hint)``; empty if valid."""
    if not isinstance(data, dict):
        return [f"(top level): expected a mapping of sections, got {type(data).__name__}"]
    try:
        StudyConfig.model_validate(data)
    except ValidationError as err:
        return _format_errors(err.errors())
    return []


def format_problems(source: str | Path, problems: list[str]) -> str:
    """The message of a :class:`StudyConfigError` listing ``problems`` of the study file ``source``."""
    listing = "\n  ".join(problems)
    return f"{source}: {len(problems)} problem(s):\n  {listing}"


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"line {line}: key {key!r} appears twice in one mapping (first on line {first_line}); "
                         "keep one, a repeated key would silently replace the first")


class _StudyLoader(yaml.SafeLoader):
    """The safe loader, refusing repeated keys and reading ``1e-3`` as a number (YAML 1.2), not a string."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the safe loader reports it
                continue
            line = key_node.start_mark.line + 1
            if duplicate:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep)


_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?\.[0-9_]+[eE][-+]?[0-9]+"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a study file with the safe loader; every error names the file (and the line where there is one)."""
    path = Path(path)
    if path.is_dir():
        raise StudyConfigError(f"study file {path} is a directory; give the YAML file itself")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StudyConfigError(f"study file {path} does not exist") from None
    except OSError as err:
        raise StudyConfigError(f"study file {path} cannot be read: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise StudyConfigError(f"{path}, line {line}: not UTF-8 text ({err.reason} {raw[err.start:err.end]!r}); "
                               "save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StudyLoader)  # noqa: S506 - a subclass of the safe loader
    except _DuplicateKey as err:
        raise StudyConfigError(f"{path}, {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({err.context})" if err.context else ""
        raise StudyConfigError(f"{path} is not valid YAML: {where}{err.problem}{context}") from None
    except yaml.YAMLError as err:
        raise StudyConfigError(f"{path} is not valid YAML: {err}") from None


def load_study_config(path: str | Path, base: Path | None = None) -> StudyConfig:
    """Read and validate a study file; relative paths resolve against ``base`` (default: current directory)."""
    data = read_yaml(path)
    problems = study_problems(data)
    if problems:
        raise StudyConfigError(format_problems(path, problems))
    if isinstance(data, dict) and "ray" in data:
        log.warning("%s: %s", path, RAY_SECTION_NOTE)
    return StudyConfig.model_validate(data).resolve_paths(base or Path.cwd())


def read_saved_study(study_dir: str | Path) -> StudyConfig | None:
    """The study saved in ``study_dir/study.yaml`` (None when there is none), validated like any study file."""
    path = StudyDir(Path(study_dir)).study_file
    if not path.exists():
        return None
    data = read_yaml(path)
    problems = study_problems(data)
    if problems:
        raise StudyConfigError(format_problems(path, problems))
    return StudyConfig.model_validate(data)
