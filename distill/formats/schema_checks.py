"""Tool-argument checks compiled once per schema, for validating many lines that share the same tool list.

`checker(schema)` returns a function `value -> problem | None` that answers exactly as
`distill.schema.schema_problem(schema, value)` does. For the plain schemas tool definitions mostly use (`type`,
`properties`, `required`, `additionalProperties` true/false, `pattern`, `minLength`, `maxLength`, `description`,
`title`, no `$schema`) it first runs a check compiled to a few Python closures; that check only ever says "valid"
when jsonschema would, and everything else (any other keyword, any value it does not accept) goes to the cached
jsonschema validator, which also words the problem. Raises jsonschema.SchemaError for a schema that is not valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from distill.schema import validator

__all__ = ["checker"]

Check = Callable[[Any], bool]

_KNOWN = frozenset(
    {"type", "properties", "required", "additionalProperties", "pattern", "minLength", "maxLength", "description", "title"}
)
_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),  # 1.0 goes to jsonschema
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _compile(schema: Any) -> Check | None:
    """A conservative validity check of `schema`, or None when it uses anything this does not handle."""
    if not isinstance(schema, dict) or set(schema) - _KNOWN:
        return None
    tests: list[Check] = []
    if "type" in schema:
        kinds = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) and k in _TYPES for k in kinds):
            return None
        preds = [_TYPES[k] for k in kinds]
        tests.append(preds[0] if len(preds) == 1 else lambda v: any(p(v) for p in preds))
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        return None
    compiled: dict[str, Check] = {}
    for key, sub in props.items():
        check = _compile(sub)
        if check is None:
            return None
        compiled[key] = check
    if compiled:
        tests.append(lambda v: not isinstance(v, dict) or all(c(v[k]) for k, c in compiled.items() if k in v))
    if "required" in schema:
        required = schema["required"]
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            return None
        tests.append(lambda v: not isinstance(v, dict) or all(r in v for r in required))
    if "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        if extra is False:
            allowed = frozenset(props)
            tests.append(lambda v: not isinstance(v, dict) or allowed.issuperset(v))
        elif extra is not True:
            return None
    if "pattern" in schema:
        try:
            found = re.compile(schema["pattern"]).search
        except (re.error, TypeError):
            return None
        tests.append(lambda v: not isinstance(v, str) or found(v) is not None)
    low, high = schema.get("minLength", 0), schema.get("maxLength", 0)
    if not _count(low) or not _count(high):
        return None
    if "minLength" in schema:
        tests.append(lambda v: not isinstance(v, str) or len(v) >= low)
    if "maxLength" in schema:
        tests.append(lambda v: not isinstance(v, str) or len(v) <= high)
    return lambda v: all(t(v) for t in tests)


@lru_cache(maxsize=1024)
def _checker(schema_text: str) -> Callable[[Any], str | None]:
    import jsonschema

    schema = json.loads(schema_text)
    full = validator(schema)  # raises SchemaError first, as schema_problem does
    fast = _compile(schema) if isinstance(schema, dict) and "$schema" not in schema else None

    def problem(value: Any) -> str | None:
        if fast is not None and fast(value):
            return None
        if full.is_valid(value):
            return None
        error = jsonschema.exceptions.best_match(full.iter_errors(value))
        return None if error is None else str(error.message)

    return problem


def checker(schema: Any) -> Callable[[Any], str | None]:
    """`value -> schema_problem(schema, value)`, compiled once per schema (cached by its canonical JSON text)."""
    return _checker(json.dumps(schema, sort_keys=True, separators=(",", ":")))
