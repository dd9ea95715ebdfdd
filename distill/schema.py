"""JSON as distill checks it: one cached JSON-Schema checker and one JSON loader that refuses duplicate keys.

`schema_problem(schema, value)` says why a value fails a JSON Schema (the best-matching error) or returns None;
`check_schema(schema)` raises `jsonschema.SchemaError` for a schema that is not valid. Validators are built once per
schema, cached by the schema's canonical JSON text (never by `id()`, which a collected schema's successor may reuse),
with the draft the schema declares (or the latest) and its format checker.

`loads_unique(text)` is `json.loads` that raises `DuplicateKeyError` (a ValueError) when an object repeats a key:
`{"a": 1, "a": 2}` is a model's mistake, not an object whose last value wins.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

__all__ = ["DuplicateKeyError", "check_schema", "loads_unique", "schema_problem", "validator"]


@lru_cache(maxsize=1024)
def _validator(schema_text: str) -> Any:
    import jsonschema

    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validator(schema: Any) -> Any:
    """The cached validator of `schema`; raises jsonschema.SchemaError when the schema is not valid."""
    return _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))


def check_schema(schema: Any) -> None:
    """Raise jsonschema.SchemaError when `schema` is not a valid JSON Schema (of the draft it declares)."""
    validator(schema)


def schema_problem(schema: Any, value: Any) -> str | None:
    """Why `value` fails the JSON Schema `schema` (the best-matching error's message), or None."""
    import jsonschema

    checker = validator(schema)
    if checker.is_valid(value):
        return None
    error = jsonschema.exceptions.best_match(checker.iter_errors(value))
    return None if error is None else str(error.message)


class DuplicateKeyError(ValueError):
    """A JSON object that repeats a key."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for key, _ in pairs:  # the first key that repeats, as a pair-by-pair check finds it
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        seen.add(key)
    raise AssertionError("unreachable")  # pragma: no cover


_UNIQUE = json.JSONDecoder(object_pairs_hook=_unique)  # one decoder (json.loads with a hook builds one a call)


def loads_unique(text: str | bytes) -> Any:
    """`json.loads`, but an object with a repeated key raises DuplicateKeyError."""
    if type(text) is str and not text.startswith("\ufeff"):  # what json.loads does with a str, but the BOM error
        return _UNIQUE.decode(text)
    return json.loads(text, object_pairs_hook=_unique)
