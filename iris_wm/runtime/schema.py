"""Every file the project reads is checked against its schema before use: a missing, extra or mistyped field, a
truncated file, or a file of another kind gives one message that names the file, the field and the fix, never a
KeyError or a parser's traceback.

Schemas are pydantic models (pydantic is a well-kept validator whose errors carry the path of the bad field; it
comes with huggingface_hub already). Configs of the models are dataclasses: :func:`config_from_dict` builds one
from a dict only when every field is present and none is unknown, at every level, so a config.json with a field
missing is refused instead of silently filled with a default (a different model with the same weight shapes).
The one exception is a field the library added later (:data:`ADDED`): files written before it existed lack it,
and its default is the behaviour they were written with.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from iris_wm.runtime.errors import IrisError


class SchemaError(IrisError, ValueError):
    """A file (or a dict read from one) that does not have the fields its kind needs."""


class Schema(BaseModel):
    """Base of the file schemas: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def _where(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(the whole file)"


def describe(error: ValidationError, limit: int = 3) -> str:
    """pydantic's errors as ``field: problem`` pairs."""
    parts = [f"{_where(e)}: {e['msg'].lower()}" for e in error.errors()[:limit]]
    more = len(error.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def read_json(path: str | Path, what: str, fix: str):
    """The JSON value in ``path``; a missing, unreadable or non-JSON file is a :class:`SchemaError` saying so."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"No {what} at {path}{' (it is a folder)' if path.is_dir() else ''}. {fix}")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise SchemaError(f"{path} is not a text file, so not a {what} ({err.reason}). {fix}") from err
    except json.JSONDecodeError as err:
        raise SchemaError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}): the {what} is damaged. {fix}"
        ) from err


def check(data, schema: type[Schema], path: str | Path, what: str, fix: str) -> Schema:
    """``data`` validated against ``schema``; otherwise a :class:`SchemaError` naming ``path`` and the fields."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise SchemaError(f"{path} is not a valid {what} ({describe(err)}). {fix}") from err


def read(path: str | Path, schema: type[Schema], what: str, fix: str) -> Schema:
    """:func:`read_json` then :func:`check`."""
    return check(read_json(path, what, fix), schema, path, what, fix)


ADDED = "added"
"""The metadata key that marks a config field added after files were written without it, e.g.
``field(default="autoregressive", metadata={"added": "issue 16"})`` (a plain string key, so the packages below
``iris_wm`` need not import it): where a file lacks the field, its default, the earlier behaviour, applies."""


def config_from_dict(cls, data, where: str):
    """An instance of the config dataclass ``cls`` from ``data``, which must hold every field and no other, at every
    level of nested dataclasses; values are checked against the fields' types."""
    problems = _field_problems(cls, data, "")
    if problems:
        raise SchemaError(f"{where}: the {cls.__name__} {'; '.join(problems[:4])}.")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        raise SchemaError(f"{where}: the {cls.__name__} has {describe(err)}.") from err
    except (TypeError, ValueError) as err:  # a dataclass's own check of its values (__post_init__)
        raise SchemaError(f"{where}: the {cls.__name__} is not valid: {err}") from err


def _field_problems(cls, data, prefix: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"{prefix or 'config'} must be an object, not {type(data).__name__}"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = [f"lacks {prefix}{name}" for name, f in fields.items() if name not in data and ADDED not in f.metadata]
    problems += [f"has an unknown field {prefix}{name}" for name in data if name not in fields]
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        nested = hints.get(name)
        if dataclasses.is_dataclass(nested) and name in fields:
            problems += _field_problems(nested, value, f"{prefix}{name}.")
    return problems
