"""Fine-tuning lines as Hugging Face dataset rows whose schema is the same for every row, and back.

Arrow unifies the keys of dict-shaped values across rows and fills the gaps with nulls, so tool arguments and tool
definitions that differ between rows come back mangled. Here every message has the same keys (null where absent)
and dict-shaped values (`JSON_FIELDS`: tool definitions, tool calls) are JSON strings; `row_to_example` inverts it
exactly. `build_dataset` makes the `datasets.DatasetDict` (one split per non-empty file) with explicit features.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill.errors import PublishError
from distill.run_folder import SPLITS, RunFolder

__all__ = [
    "JSON_FIELDS",
    "build_dataset",
    "example_to_row",
    "read_jsonl",
    "read_splits",
    "row_to_example",
    "schema_of",
    "shard_paths",
]

JSON_FIELDS = ("tools", "functions", "tool_calls", "function_call")  # stored as JSON strings
_MESSAGE_KEYS = (
    "role",
    "content",
    "name",
    "weight",
    "tool_calls",
    "tool_call_id",
    "function_call",
    "refusal",
)
_TOP_KEYS = ("messages", "tools", "functions", "parallel_tool_calls")
_MAX_SHARD_BYTES = 500 * 1024 * 1024  # datasets' default max_shard_size


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file ([] when it does not exist); a bad line is a PublishError."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise PublishError(
                    f"{path}:{number}: not valid JSON: {exc}", hint="run `distill validate` on it"
                )
            if not isinstance(row, dict):
                raise PublishError(f"{path}:{number}: a line must be a JSON object")
            rows.append(row)
    return rows


def read_splits(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The run's fine-tuning lines per split; an empty validation file gives no validation split."""
    folder = RunFolder(run_dir)
    folder.require(folder.train)
    splits = {name: read_jsonl(folder.split(name)) for name in SPLITS}
    if not splits["train"]:
        raise PublishError(f"{folder.train} is empty: nothing to publish")
    return {name: rows for name, rows in splits.items() if rows}


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def example_to_row(example: dict[str, Any], message_keys: list[str], top_keys: list[str]) -> dict[str, Any]:
    """One fine-tuning line as a dataset row: every message has every key of `message_keys` (None when absent) and
    JSON_FIELDS values are JSON strings, so every row has the same Arrow schema."""
    row: dict[str, Any] = {}
    for key in top_keys:
        if key == "messages":
            row[key] = [
                {
                    k: (_encode(m[k]) if k in JSON_FIELDS and m.get(k) is not None else m.get(k))
                    for k in message_keys
                }
                for m in example["messages"]
            ]
        else:
            value = example.get(key)
            row[key] = _encode(value) if key in JSON_FIELDS and value is not None else value
    return row


def row_to_example(row: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `example_to_row`: the OpenAI fine-tuning line again (absent keys dropped, JSON decoded;
    a message's `content` is always kept, as `null` when it had none)."""

    def decode(key: str, value: Any) -> Any:
        return json.loads(value) if key in JSON_FIELDS and isinstance(value, str) else value

    example: dict[str, Any] = {}
    for key, value in row.items():
        if key == "messages":
            example[key] = [
                {k: decode(k, v) for k, v in m.items() if v is not None or k == "content"} for m in value
            ]
        elif value is not None:
            example[key] = decode(key, value)
    return example


def schema_of(splits: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """The message keys and top-level keys used across all splits, in canonical order; unknown keys and
    non-string contents are PublishErrors."""
    message_keys: set[str] = set()
    top_keys: set[str] = set()
    for name, rows in splits.items():
        for number, example in enumerate(rows, start=1):
            unknown = set(example) - set(_TOP_KEYS)
            messages = example.get("messages")
            if unknown or not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                what = f"unknown keys {sorted(unknown)}" if unknown else "no list of message objects"
                raise PublishError(
                    f"{name}.jsonl:{number}: {what}", hint="run `distill validate` on the file"
                )
            top_keys.update(example)
            for m in messages:
                extra = set(m) - set(_MESSAGE_KEYS)
                if extra:
                    raise PublishError(f"{name}.jsonl:{number}: unknown message keys {sorted(extra)}")
                if not isinstance(m.get("content"), (str, type(None))):
                    raise PublishError(f"{name}.jsonl:{number}: a message content that is not a string")
                message_keys.update(m)
    message_keys.update(("role", "content"))
    return [k for k in _MESSAGE_KEYS if k in message_keys], [k for k in _TOP_KEYS if k in top_keys]


def _features(message_keys: list[str], top_keys: list[str]) -> Any:
    from datasets import Features, List, Value

    def kind(key: str) -> Any:
        if key == "weight":
            return Value("int64")
        if key == "parallel_tool_calls":
            return Value("bool")
        return Value("string")

    columns: dict[str, Any] = {}
    for key in top_keys:
        columns[key] = List({k: kind(k) for k in message_keys}) if key == "messages" else kind(key)
    return Features(columns)


def build_dataset(splits: dict[str, list[dict[str, Any]]]) -> Any:
    """A `datasets.DatasetDict` with one split per non-empty file and explicit features (the same for all)."""
    from datasets import Dataset, DatasetDict

    message_keys, top_keys = schema_of(splits)
    features = _features(message_keys, top_keys)
    return DatasetDict(
        {
            name: Dataset.from_list(
                [example_to_row(e, message_keys, top_keys) for e in rows], features=features
            )
            for name, rows in splits.items()
        }
    )


def shard_paths(dataset: Any) -> dict[str, list[str]]:
    """The file names `push_to_hub` gives each split's shards (`data/<split>-<i>-of-<n>.parquet`)."""
    out: dict[str, list[str]] = {}
    for name, split in dataset.items():
        n = _num_shards(split)
        out[name] = [f"data/{name}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    return out


def _num_shards(split: Any) -> int:
    return max(1, math.ceil(split.data.nbytes / _MAX_SHARD_BYTES))
