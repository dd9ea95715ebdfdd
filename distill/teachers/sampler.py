"""Deterministic JSON-Schema instances: the offline teacher's answers to `kind: simulated` tool calls.

An example with the same input gives its output; otherwise a value is sampled from `output_schema` (enums, nullable
types, anyOf, nested objects, arrays, $defs references), echoing arguments of the same name and imitating the
examples' values; the seed is the plan's. Also the two helpers simulated observations share with the online path:
how a value is printed to the agent and when an output schema travels wrapped as {"output": ...}.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from distill.config import SimulatedTool
from distill.schema import schema_problem

__all__ = ["observation_text", "sample_instance", "simulate_offline", "wrapped_output"]


def wrapped_output(tool: SimulatedTool) -> bool:
    """Structured outputs need an object at the root: other output schemas travel as {"output": ...}."""
    schema = tool.output_schema
    return schema is not None and not (schema.get("type") == "object" or "properties" in schema)


def observation_text(value: Any) -> str:
    """What the agent sees: text as it is, any other JSON value as compact-spaced JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def simulate_offline(context: dict[str, Any]) -> str:
    """What the offline teacher answers to a `simulate` request: deterministic from the plan's seed and the call."""
    plan, tool, step = context["plan"], context["tool"], context["step"]
    arguments: Any = json.loads(step.action_input) if tool.structured else step.action_input
    with_output = [e for e in tool.examples if e.output is not None]
    for example in with_output:
        if example.input == arguments:
            value = example.output
            break
    else:
        rng = random.Random(f"{plan.seed}:{tool.name}:{step.action_input}")
        if tool.output_schema is not None:
            hints = arguments if isinstance(arguments, dict) else {}
            samples = [e.output for e in with_output]
            value = None
            for _ in range(3):
                value = sample_instance(tool.output_schema, rng, hints=hints, examples=samples)
                if schema_problem(tool.output_schema, value) is None:
                    break
            else:
                value = rng.choice(samples) if samples else value
        else:
            value = rng.choice(with_output).output
    if tool.output_schema is not None and wrapped_output(tool):
        value = {"output": value}
    return observation_text(value) if tool.output_schema is None else json.dumps(value, ensure_ascii=False)


_DIGIT = re.compile(r"[0-9]")
_FORMATS = {
    "email": lambda r: f"customer{r.randrange(1000)}@example.com",
    "date": lambda r: f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00:00Z",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
    "uri": lambda r: f"https://example.com/{r.randrange(10**6)}",
    "uuid": lambda r: f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-"
    f"8{r.getrandbits(12):03x}-{r.getrandbits(48):012x}",
}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
    merged = {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}
    return merged


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "string")


def sample_instance(
    schema: dict[str, Any], rng: random.Random, *, hints: dict[str, Any] | None = None, examples: list[Any] | None = None
) -> Any:
    """A value for a JSON Schema, drawn with `rng`: `hints` fill properties of the same name (the call's arguments),
    `examples` (values the schema describes) are imitated: their keys kept, their strings reused with new digits."""
    return _sample(schema, schema, rng, hints or {}, examples or [], "", 0)


def _sample(schema: Any, root: dict[str, Any], rng: random.Random, hints: dict[str, Any], seen: list[Any],
            name: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 12:
        return None
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        values = [v for v in schema["enum"] if v is not None] or schema["enum"]
        return rng.choice(values)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            resolved = [_resolve(o, root) for o in options if isinstance(o, dict)]
            non_null = [o for o in resolved if o.get("type") != "null"] or resolved
            branch = rng.choice(non_null)
            rest = {k: v for k, v in schema.items() if k != key}
            return _sample({**rest, **branch}, root, rng, hints, seen, name, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part, root) if isinstance(part, dict) else {}
            merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        return _sample(merged, root, rng, hints, seen, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        seen_types = {_type_of(v) for v in seen if v is not None}
        candidates = [k for k in kind if k != "null"] or kind
        kind = next((k for k in candidates if k in seen_types), None) or rng.choice(candidates)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _object(schema, root, rng, hints, seen, depth)
    if kind == "array":
        lengths = [len(v) for v in seen if isinstance(v, list)]
        low = schema.get("minItems", 1 if lengths else 0)
        high = max(low, min(schema.get("maxItems", 3), max(lengths, default=3)))
        items = [x for v in seen if isinstance(v, list) for x in v]
        return [_sample(schema.get("items", {}), root, rng, hints, items, name, depth + 1)
                for _ in range(rng.randint(max(low, min(1, high)), high))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + (100 if kind == "integer" else 500)))
        if kind == "integer":
            return rng.randint(int(low) + ("exclusiveMinimum" in schema), int(high) - ("exclusiveMaximum" in schema))
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng, seen, name)


def _object(schema: dict[str, Any], root: dict[str, Any], rng: random.Random, hints: dict[str, Any],
            seen: list[Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    seen_objects = [v for v in seen if isinstance(v, dict)]
    out: dict[str, Any] = {}
    for key, sub in properties.items():
        values = [v[key] for v in seen_objects if key in v]
        wanted = key in required or bool(values) or key in hints
        if not wanted and rng.random() < 0.5:
            continue
        if key in hints and _fits(_resolve(sub, root) if isinstance(sub, dict) else {}, hints[key]):
            out[key] = hints[key]
        else:
            out[key] = _sample(sub, root, rng, hints, values, key, depth + 1)
    return out


def _fits(schema: dict[str, Any], value: Any) -> bool:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and _type_of(value) not in kinds and not (_type_of(value) == "integer" and "number" in kinds):
        return False
    return "enum" not in schema or value in schema["enum"]


def _string(schema: dict[str, Any], rng: random.Random, seen: list[Any], name: str) -> str:
    strings = [v for v in seen if isinstance(v, str)]
    fmt = _FORMATS.get(schema.get("format", ""))
    if fmt is not None:
        text = fmt(rng)
    elif strings:
        text = _DIGIT.sub(lambda _: str(rng.randrange(10)), rng.choice(strings))
    else:
        text = f"{name.replace('_', ' ') or 'value'} {rng.randrange(100, 1000)}"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(text) < low:
        text = text + "x" * (low - len(text))
    return text[:high] if high is not None else text
