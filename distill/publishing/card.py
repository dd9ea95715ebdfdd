"""The dataset card of a published run: Hub metadata and a body that says how the data was made.

Metadata: license and extra tags from the config's `publish:` section, task categories, the tags synthetic /
distillation / tool-use / agent plus the agent format's, a size category, the data files of each split. Body: what
the data is, how it was made (teacher, agent format, tools, mix), counts and reject reasons, token statistics, the
data fields, a load snippet and the config that made it, with secrets (key-like fields, known secret values, URL
credentials) replaced by `<redacted>`.
"""

from __future__ import annotations

from typing import Any

from distill.config import Config, PublishConfig
from distill.publishing.rows import JSON_FIELDS
from distill.redact import redact, scrub_text, secret_values

__all__ = ["BASE_TAGS", "build_card"]

BASE_TAGS = ("synthetic", "distillation", "tool-use", "agent")
_FORMATS = {
    "langchain-chat": "LangChain's conversational-chat agent (`CHAT_CONVERSATIONAL_REACT_DESCRIPTION`): every "
    "example is exactly the messages the agent runtime sends, and every trained assistant message is one JSON "
    "action (`action`, `action_input`).",
    "openai-tools": "OpenAI tool calling: the tool definitions go in `tools` and every trained assistant message is "
    "tool calls (`tool_calls`) or the final answer.",
}
_FORMAT_TAGS = {"langchain-chat": ["langchain"], "openai-tools": ["function-calling"]}
def _size_category(n: int) -> str:
    labels = [
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
        "10M<n<100M",
        "100M<n<1B",
        "1B<n<10B",
    ]
    labels += ["10B<n<100B", "100B<n<1T"]
    return next((label for power, label in enumerate(labels, start=3) if n < 10**power), "n>1T")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows
    ]
    return "\n".join(lines)


def _provenance(manifest: dict[str, Any], config: Config | None) -> str:
    teacher = manifest.get("teacher") or {}
    fmt = str(manifest.get("agent_format", "unknown"))
    lines = [
        "## How it was made",
        "",
        f"- **Teacher**: `{teacher.get('model', 'unknown')}` (provider: {teacher.get('provider', 'unknown')})",
        f"- **Agent format**: `{fmt}`" + (f" — {_FORMATS[fmt]}" if fmt in _FORMATS else ""),
    ]
    if teacher.get("note"):
        lines.append(f"- **Note**: {teacher['note']}")
    if config is not None:
        mix = config.generation.mix
        lines += [
            (
                f"- **Step budget**: {config.agent.max_steps} model calls per turn, memory window "
                f"{config.agent.memory_window} turns"
            ),
            (
                f"- **Mix**: tool {mix.tool:g}, direct {mix.direct:g}, multi-turn {mix.multi_turn:g} "
                f"({config.generation.conversations} conversations, seed {config.generation.seed})"
            ),
            f"- **Fine-tuning target**: `{config.export.model}`",
            "",
            "Tools the agent was given:",
            "",
            _table(["name", "kind", "description"], [[t.name, t.kind, t.description] for t in config.tools]),
        ]
    sources = manifest.get("sources") or {}
    if sources:
        lines += [
            "",
            (
                f"Sources: {sources.get('documents', '?')} documents cut into {sources.get('chunks', '?')} chunks; "
                "the split is by source document (no document feeds both splits)."
            ),
        ]
    lines += [
        "",
        (
            "Every teacher answer was checked by distill's strict validator for this agent format (a configured "
            "tool and arguments that satisfy its schema, or a final answer; nothing malformed, nothing repaired); a "
            "conversation with any rejected answer was dropped, with its reason, before export."
        ),
    ]
    return "\n".join(lines)


def _counts(manifest: dict[str, Any], rows: dict[str, int]) -> str:
    conv = manifest.get("conversations") or {}
    lines = ["## Counts", ""]
    lines.append(
        _table(
            ["requested", "accepted", "rejected", "failed"],
            [[conv.get(k, "?") for k in ("requested", "accepted", "rejected", "failed")]],
        )
    )
    lines += ["", _table(["split", "examples"], [[k, v] for k, v in rows.items()])]
    for title, key in (("Rejected", "rejects_by_reason"), ("Failed", "failures_by_reason")):
        reasons = manifest.get(key) or {}
        if reasons:
            lines += [
                "",
                f"{title} conversations by reason:",
                "",
                _table(["reason", "conversations"], [[r, n] for r, n in reasons.items()]),
            ]
    if not (manifest.get("rejects_by_reason") or manifest.get("failures_by_reason")):
        lines += ["", "No conversation was rejected or failed."]
    return "\n".join(lines)


def _tokens(manifest: dict[str, Any]) -> str:
    tokens = manifest.get("tokens") or {}
    keys = ["n", "min", "mean", "median", "p95", "max", "total"]
    rows = [
        [split, *(tokens[split].get(k, "") for k in keys)]
        for split in ("train", "validation")
        if split in tokens
    ]
    lines = ["## Token statistics", ""]
    if tokens.get("model"):
        lines.append(
            f"Tokens per example for `{tokens['model']}` (per-example limit {tokens.get('example_limit', '?')}), "
            "counted by the OpenAI cookbook's rule:"
        )
        lines.append("")
    lines.append(_table(["split", *keys], rows))
    estimate = manifest.get("fine_tuning_estimate") or {}
    if estimate:
        lines += [
            "",
            (
                f"Fine-tuning estimate: {estimate.get('training_tokens')} training tokens x {estimate.get('epochs')} "
                f"epochs (OpenAI's default rule) = {estimate.get('billed_tokens')} billed tokens."
            ),
        ]
    return "\n".join(lines)


def _fields(message_keys: list[str], top_keys: list[str]) -> str:
    json_cols = [k for k in top_keys if k in JSON_FIELDS] + [
        f"messages[].{k}" for k in message_keys if k in JSON_FIELDS
    ]
    lines = [
        "## Data fields",
        "",
        "Each row is one OpenAI chat fine-tuning example.",
        "",
        (
            f"- `messages`: a list of messages, each with the keys {', '.join(f'`{k}`' for k in message_keys)} "
            "(`null` where a message does not have the key)."
        ),
        (
            "- `weight` (assistant messages only): `0` marks an earlier turn's answer that is context, not trained "
            "on; `null` means trained (the OpenAI default)."
        ),
    ]
    for key in top_keys:
        if key != "messages":
            lines.append(
                f"- `{key}`: {'a JSON string' if key in JSON_FIELDS else 'as in the OpenAI format'}."
            )
    if json_cols:
        lines.append(
            f"- JSON strings: {', '.join(f'`{c}`' for c in json_cols)} hold dict-shaped values as JSON text, so "
            "that Arrow does not merge the keys of different rows; `json.loads` them back."
        )
    return "\n".join(lines)


def _load_snippet(repo_id: str) -> str:
    return f"""## Load it

```python
import json
from datasets import load_dataset

ds = load_dataset("{repo_id}")
print(ds["train"][0]["messages"][-1]["content"])

JSON_FIELDS = {JSON_FIELDS!r}


def to_openai(row):
    \"\"\"A row back to an OpenAI fine-tuning line (absent keys dropped, JSON strings decoded).\"\"\"
    def dec(k, v):
        return json.loads(v) if k in JSON_FIELDS and isinstance(v, str) else v

    out = {{k: dec(k, v) for k, v in row.items() if k != "messages" and v is not None}}
    out["messages"] = [{{k: dec(k, v) for k, v in m.items() if v is not None or k == "content"}}
                       for m in row["messages"]]
    return out


with open("train.jsonl", "w") as fh:
    for row in ds["train"]:
        fh.write(json.dumps(to_openai(row), ensure_ascii=False) + "\\n")
```

With distill installed, `distill.publishing.rows.row_to_example(row)` does the same."""


def build_card(
    manifest: dict[str, Any],
    config: Config | None,
    repo_id: str,
    dataset: Any,
    *,
    publish: PublishConfig | None = None,
    secrets: list[str] | None = None,
) -> Any:
    """The `huggingface_hub.DatasetCard`: metadata (license, task categories, tags, size, data files) and a body
    with the run's provenance, counts, token statistics, config (no secrets) and a load snippet.

    `config` is the run's config (the manifest's); `publish` overrides its `publish:` section."""
    import yaml
    from huggingface_hub import DatasetCard, DatasetCardData

    secrets = secret_values(secrets or [])
    publish_cfg = publish or (config.publish if config is not None else None)
    name = manifest.get("name") or (config.name if config else repo_id.split("/")[-1])
    rows = {split: len(ds) for split, ds in dataset.items()}
    fmt_tags = _FORMAT_TAGS.get(str(manifest.get("agent_format")), [])
    tags = list(dict.fromkeys([*BASE_TAGS, *fmt_tags, *(publish_cfg.tags if publish_cfg else [])]))
    data = DatasetCardData(
        license=publish_cfg.license if publish_cfg else "unknown",
        task_categories=["text-generation"],
        tags=tags,
        size_categories=[_size_category(sum(rows.values()))],
        pretty_name=(publish_cfg.pretty_name if publish_cfg else None) or name,
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in dataset],
            }
        ],
    )
    message_keys = list(next(iter(dataset.values())).features["messages"].feature)
    top_keys = list(next(iter(dataset.values())).features)
    config_yaml = yaml.safe_dump(
        redact(manifest.get("config") or {}, secrets), sort_keys=False, allow_unicode=True, width=110
    )
    total = sum(rows.values())
    summary = (
        f"Synthetic tool-use conversations for fine-tuning a model to act as the `{name}` agent, distilled by distill "
        f"from a teacher model that played the agent over a set of documents. "
        f"{total} examples ({', '.join(f'{n} {s}' for s, n in rows.items())}), in OpenAI's chat fine-tuning format."
    )
    body = "\n\n".join(
        [
            f"# {data.pretty_name}",
            summary,
            _provenance(manifest, config),
            _counts(manifest, rows),
            _tokens(manifest),
            _fields(message_keys, top_keys),
            _load_snippet(repo_id),
            (
                "## Config\n\nThe distill config that produced this data (secrets removed; config hash "
                f"`{manifest.get('config_hash', '?')}`):\n\n```yaml\n{config_yaml}```"
            ),
        ]
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{scrub_text(body, secrets)}\n")
    return card
