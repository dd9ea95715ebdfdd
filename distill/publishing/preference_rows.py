"""Preference pairs as a second config of the published dataset (`preferences`), and back.

A run with `export.preferences: true` holds `preferences.train.jsonl` / `preferences.validation.jsonl` (OpenAI's
preference format). Published, each line is a row with the fixed schema of `distill.publishing.rows`: `messages`
(the prompt, `input.messages`), `tools` (JSON string) and `parallel_tool_calls` when the run has them, and
`preferred_output` / `non_preferred_output` (one message each, the same message keys as `messages`).
`row_to_preference` inverts it exactly. The config's files are `preferences/<split>-0000N-of-0000M.parquet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.publishing.rows import example_to_row, read_jsonl, row_to_example, schema_of
from distill.run_folder import SPLITS, RunFolder

__all__ = [
    "CONFIG_NAME",
    "add_to_card",
    "build_preference_dataset",
    "preference_paths",
    "preference_to_row",
    "read_preference_splits",
    "row_to_preference",
    "write_preference_files",
]

CONFIG_NAME = "preferences"
_OUTPUTS = ("preferred_output", "non_preferred_output")


def read_preference_splits(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The run's preference lines per split (empty splits left out; {} when the run has none)."""
    splits = {name: read_jsonl(RunFolder(run_dir).preference_split(name)) for name in SPLITS}
    return {name: rows for name, rows in splits.items() if rows}


def _as_chat(line: dict[str, Any]) -> dict[str, Any]:
    """The line as a chat example whose messages are the prompt followed by both outputs (for the shared schema)."""
    source = line.get("input") or {}
    outputs = [m for key in _OUTPUTS for m in line.get(key) or []]
    return {**{k: v for k, v in source.items() if k != "messages"}, "messages": [*source.get("messages", []), *outputs]}


def preference_to_row(line: dict[str, Any], message_keys: list[str], top_keys: list[str]) -> dict[str, Any]:
    """One preference line as a dataset row (see the module doc)."""
    source = line["input"]
    row = example_to_row(source, message_keys, top_keys)
    for key in _OUTPUTS:
        row[key] = example_to_row({"messages": line[key]}, message_keys, ["messages"])["messages"]
    return row


def row_to_preference(row: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `preference_to_row`: the OpenAI preference line again."""
    source = row_to_example({k: v for k, v in row.items() if k not in _OUTPUTS})
    out: dict[str, Any] = {"input": source}
    for key in _OUTPUTS:
        out[key] = row_to_example({"messages": row[key]})["messages"]
    return out


def build_preference_dataset(splits: dict[str, list[dict[str, Any]]]) -> Any:
    """A `datasets.DatasetDict` of the preference rows, with explicit features (the same for every split)."""
    from datasets import Dataset, DatasetDict, Features, List, Value

    message_keys, top_keys = schema_of({n: [_as_chat(line) for line in rows] for n, rows in splits.items()})

    def kind(key: str) -> Any:
        return Value("int64") if key == "weight" else Value("bool") if key == "parallel_tool_calls" else Value("string")

    message = {k: kind(k) for k in message_keys}
    columns: dict[str, Any] = {k: (List(message) if k == "messages" else kind(k)) for k in top_keys}
    columns.update({key: List(message) for key in _OUTPUTS})
    features = Features(columns)
    return DatasetDict({
        name: Dataset.from_list([preference_to_row(line, message_keys, top_keys) for line in rows], features=features)
        for name, rows in splits.items()
    })


def preference_paths(dataset: Any) -> dict[str, str]:
    """The one parquet file of each split (preference files are small: one shard)."""
    return {name: f"{CONFIG_NAME}/{name}-00000-of-00001.parquet" for name in dataset}


def write_preference_files(dataset: Any, out_dir: Path) -> list[str]:
    """Write the config's parquet files under `out_dir` (a dry run); returns their relative paths."""
    written = []
    for name, rel in preference_paths(dataset).items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset[name].to_parquet(str(target))
        written.append(rel)
    return written


def add_to_card(card: Any, dataset: Any) -> None:
    """Declare the `preferences` config in the card's metadata and describe it in its body."""
    card.data.configs = [*(card.data.configs or []), {
        "config_name": CONFIG_NAME,
        "data_files": [{"split": name, "path": f"{CONFIG_NAME}/{name}-*"} for name in dataset],
    }]
    rows = ", ".join(f"{len(ds)} {name}" for name, ds in dataset.items())
    card.text = card.text.rstrip("\n") + (
        f"\n\n## Preference pairs\n\nThe `{CONFIG_NAME}` config ({rows} rows) pairs, at the same prompt, the answer the "
        "teacher gave that passed distill's strict checks (`preferred_output`) with one it gave before that failed "
        "them (`non_preferred_output`), for preference fine-tuning (DPO). `messages` (and `tools`, "
        "`parallel_tool_calls`) are the prompt exactly as the agent runtime sent it. Load it with "
        f"`load_dataset(REPO, \"{CONFIG_NAME}\")`; `distill.publishing.preference_rows.row_to_preference(row)` turns "
        "a row back into OpenAI's preference format (`input`, `preferred_output`, `non_preferred_output`).\n"
    )
