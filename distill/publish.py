"""Publish a run folder to the Hugging Face Hub: a `DatasetDict` (train, validation) and a provenance card.

`publish(run, repo)` reads `train.jsonl`, `validation.jsonl` and `manifest.json`, turns each fine-tuning line into a
row whose schema is fixed across rows (see `example_to_row`: dict-shaped values such as tool calls and tool
definitions are stored as JSON strings, so Arrow cannot merge their keys and fill the gaps with nulls), builds a
`DatasetCard` that says how the data was made (teacher, agent format, tools, mix, counts, reject reasons, token
statistics, the config with no secrets, a load snippet) and pushes both with `DatasetDict.push_to_hub` and
`DatasetCard.push_to_hub`. `dry_run=DIR` writes the same files (`README.md`, `data/<split>-00000-of-0000N.parquet`)
to DIR instead, so that `datasets.load_dataset(DIR)` loads exactly what would be pushed.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from distill.config import Config
from distill.errors import PublishError, RunFolderError

__all__ = [
    "JSON_FIELDS",
    "PublishResult",
    "build_card",
    "build_dataset",
    "example_to_row",
    "publish",
    "read_splits",
    "resolve_hf_token",
    "row_to_example",
    "shard_paths",
]

JSON_FIELDS = ("tools", "functions", "tool_calls", "function_call")  # stored as JSON strings
_MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal")
_TOP_KEYS = ("messages", "tools", "functions", "parallel_tool_calls")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SECRET_KEY = re.compile(r"(?:^|[_-])(api[_-]?key|key|token|secret|password|passwd|authorization|credentials?)$", re.I)
_MAX_SHARD_BYTES = 500 * 1024 * 1024  # datasets' default max_shard_size
BASE_TAGS = ("synthetic", "distillation", "tool-use", "agent")
REDACTED = "<redacted>"


@dataclass
class PublishResult:
    """What was (or, with a dry run, would be) pushed."""

    repo_id: str
    url: str
    rows: dict[str, int]
    files: list[str]
    card: str
    dry_run: Path | None = None
    commits: list[str] = field(default_factory=list)


# -- the run folder --------------------------------------------------------------------------------------------------


def _read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no manifest.json", hint="run `distill generate CONFIG` first")
    return json.loads(path.read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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
                raise PublishError(f"{path}:{number}: not valid JSON: {exc}", hint="run `distill validate` on it")
            if not isinstance(row, dict):
                raise PublishError(f"{path}:{number}: a line must be a JSON object")
            rows.append(row)
    return rows


def read_splits(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The run's fine-tuning lines per split; an empty validation file gives no validation split."""
    if not (run_dir / "train.jsonl").is_file():
        raise RunFolderError(f"{run_dir} has no train.jsonl", hint="run `distill generate CONFIG` first")
    splits = {name: _read_jsonl(run_dir / f"{name}.jsonl") for name in ("train", "validation")}
    if not splits["train"]:
        raise PublishError(f"{run_dir}/train.jsonl is empty: nothing to publish")
    return {name: rows for name, rows in splits.items() if rows}


# -- rows: a schema fixed across rows --------------------------------------------------------------------------------


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def example_to_row(example: dict[str, Any], message_keys: list[str], top_keys: list[str]) -> dict[str, Any]:
    """One fine-tuning line as a dataset row: every message has every key of `message_keys` (None when absent) and
    JSON_FIELDS values are JSON strings, so every row has the same Arrow schema."""
    row: dict[str, Any] = {}
    for key in top_keys:
        if key == "messages":
            row[key] = [
                {k: (_encode(m[k]) if k in JSON_FIELDS and m.get(k) is not None else m.get(k)) for k in message_keys}
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


def _schema(splits: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
    message_keys: set[str] = set()
    top_keys: set[str] = set()
    for name, rows in splits.items():
        for number, example in enumerate(rows, start=1):
            unknown = set(example) - set(_TOP_KEYS)
            messages = example.get("messages")
            if unknown or not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                what = f"unknown keys {sorted(unknown)}" if unknown else "no list of message objects"
                raise PublishError(f"{name}.jsonl:{number}: {what}", hint="run `distill validate` on the file")
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

    message_keys, top_keys = _schema(splits)
    features = _features(message_keys, top_keys)
    return DatasetDict(
        {
            name: Dataset.from_list([example_to_row(e, message_keys, top_keys) for e in rows], features=features)
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


# -- secrets ---------------------------------------------------------------------------------------------------------


def _secret_values(extra: list[str | None]) -> list[str]:
    values = [os.environ.get("OPENAI_API_KEY"), os.environ.get("HF_TOKEN"), *extra]
    return sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True)


def _scrub_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    if "://" in text:
        parts = urlsplit(text)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
            text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return text


def redact(value: Any, secrets: list[str]) -> Any:
    """A copy of `value` with secret-looking keys, secret values and URL credentials replaced by <redacted>."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    return value


# -- the card --------------------------------------------------------------------------------------------------------


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    bounds += [(10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "n>1T" if n >= 10**12 else "1B<n<10B")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _config_of(manifest: dict[str, Any]) -> Config | None:
    from pydantic import ValidationError

    try:
        return Config.model_validate(manifest.get("config") or {})
    except ValidationError:
        return None


def _provenance(manifest: dict[str, Any], config: Config | None) -> str:
    teacher = manifest.get("teacher") or {}
    lines = [
        "## How it was made",
        "",
        f"- **Teacher**: `{teacher.get('model', 'unknown')}` (provider: {teacher.get('provider', 'unknown')})",
        f"- **Agent format**: `{manifest.get('agent_format', 'unknown')}` — LangChain's conversational-chat agent "
        "(`CHAT_CONVERSATIONAL_REACT_DESCRIPTION`): every example is exactly the messages the agent runtime sends, "
        "and every trained assistant message is one JSON action (`action`, `action_input`).",
    ]
    if teacher.get("note"):
        lines.append(f"- **Note**: {teacher['note']}")
    if config is not None:
        mix = config.generation.mix
        lines += [
            f"- **Step budget**: {config.agent.max_steps} model calls per turn, memory window "
            f"{config.agent.memory_window} turns",
            f"- **Mix**: tool {mix.tool:g}, direct {mix.direct:g}, multi-turn {mix.multi_turn:g} "
            f"({config.generation.conversations} conversations, seed {config.generation.seed})",
            f"- **Fine-tuning target**: `{config.export.model}`",
            "",
            "Tools the agent was given:",
            "",
            _table(["name", "kind", "description"], [[t.name, t.kind, t.description] for t in config.tools]),
        ]
    sources = manifest.get("sources") or {}
    if sources:
        lines += ["", f"Sources: {sources.get('documents', '?')} documents cut into {sources.get('chunks', '?')} "
                  "chunks; the split is by source document (no document feeds both splits)."]
    lines += [
        "",
        "Every teacher answer was checked by distill's strict validator (one fenced ```json block, exactly the keys "
        "`action` and `action_input`, a configured tool or exactly `Final Answer`, input matching the tool's "
        "schema); conversations with any rejected answer were dropped, with their reason, before export.",
    ]
    return "\n".join(lines)


def _counts(manifest: dict[str, Any], rows: dict[str, int]) -> str:
    conv = manifest.get("conversations") or {}
    lines = ["## Counts", ""]
    lines.append(
        _table(["requested", "accepted", "rejected", "failed"], [[conv.get(k, "?") for k in
               ("requested", "accepted", "rejected", "failed")]])
    )
    lines += ["", _table(["split", "examples"], [[k, v] for k, v in rows.items()])]
    for title, key in (("Rejected", "rejects_by_reason"), ("Failed", "failures_by_reason")):
        reasons = manifest.get(key) or {}
        if reasons:
            lines += ["", f"{title} conversations by reason:", "", _table(["reason", "conversations"],
                                                                         [[r, n] for r, n in reasons.items()])]
    if not (manifest.get("rejects_by_reason") or manifest.get("failures_by_reason")):
        lines += ["", "No conversation was rejected or failed."]
    return "\n".join(lines)


def _tokens(manifest: dict[str, Any]) -> str:
    tokens = manifest.get("tokens") or {}
    keys = ["n", "min", "mean", "median", "p95", "max", "total"]
    rows = [[split, *(tokens[split].get(k, "") for k in keys)] for split in ("train", "validation") if split in tokens]
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
            f"Fine-tuning estimate: {estimate.get('training_tokens')} training tokens x {estimate.get('epochs')} "
            f"epochs (OpenAI's default rule) = {estimate.get('billed_tokens')} billed tokens.",
        ]
    return "\n".join(lines)


def _fields(message_keys: list[str], top_keys: list[str]) -> str:
    json_cols = [k for k in top_keys if k in JSON_FIELDS] + [f"messages[].{k}" for k in message_keys if k in JSON_FIELDS]
    lines = [
        "## Data fields",
        "",
        "Each row is one OpenAI chat fine-tuning example.",
        "",
        f"- `messages`: a list of messages, each with the keys {', '.join(f'`{k}`' for k in message_keys)} "
        "(`null` where a message does not have the key).",
        "- `weight` (assistant messages only): `0` marks an earlier turn's answer that is context, not trained on; "
        "`null` means trained (the OpenAI default).",
    ]
    for key in top_keys:
        if key != "messages":
            lines.append(f"- `{key}`: {'a JSON string' if key in JSON_FIELDS else 'as in the OpenAI format'}.")
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

With distill installed, `distill.publish.row_to_example(row)` does the same."""


def build_card(
    manifest: dict[str, Any],
    config: Config | None,
    repo_id: str,
    dataset: Any,
    *,
    secrets: list[str] | None = None,
) -> Any:
    """The `huggingface_hub.DatasetCard`: metadata (license, task categories, tags, size, data files) and a body
    with the run's provenance, counts, token statistics, config (no secrets) and a load snippet."""
    import yaml
    from huggingface_hub import DatasetCard, DatasetCardData

    secrets = _secret_values(secrets or [])
    publish_cfg = config.publish if config is not None else None
    name = manifest.get("name") or (config.name if config else repo_id.split("/")[-1])
    rows = {split: len(ds) for split, ds in dataset.items()}
    fmt_tags = ["langchain"] if str(manifest.get("agent_format", "")).startswith("langchain") else []
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
            "## Config\n\nThe distill config that produced this data (secrets removed; config hash "
            f"`{manifest.get('config_hash', '?')}`):\n\n```yaml\n{config_yaml}```",
        ]
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{_scrub_text(body, secrets)}\n")
    return card


# -- publishing ------------------------------------------------------------------------------------------------------


def resolve_hf_token(token: str | None = None) -> str:
    """The Hub token: the argument, else HF_TOKEN, else huggingface_hub's stored login; a clear error if none."""
    if token:
        return token
    from huggingface_hub import get_token

    found = os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise PublishError(
            "no Hugging Face token: HF_TOKEN is not set and huggingface_hub has no stored login",
            hint="export HF_TOKEN=hf_... (a token with write access) or run `hf auth login`; "
            "`--dry-run DIR` needs no token",
        )
    return found


def _write(dataset: Any, card: Any, out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ["README.md"]
    (out_dir / "README.md").write_text(str(card), encoding="utf-8")
    for split, paths in shard_paths(dataset).items():
        for index, rel in enumerate(paths):
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            dataset[split].shard(num_shards=len(paths), index=index, contiguous=True).to_parquet(str(target))
            files.append(rel)
    return files


def publish(
    run: str | os.PathLike[str],
    repo: str,
    *,
    private: bool = False,
    dry_run: str | os.PathLike[str] | None = None,
    token: str | None = None,
    config: Config | None = None,
) -> PublishResult:
    """Push a run folder's train/validation files and a provenance card to the Hub dataset repo `repo`
    (`owner/name`); with `dry_run=DIR`, write exactly those files to DIR instead (no token needed).

    `config` supplies the card's `publish:` section (default: the config recorded in the run's manifest)."""
    if not _REPO_ID.match(repo):
        raise PublishError(f"{repo!r} is not a Hub repo id", hint="use OWNER/NAME, e.g. my-org/my-agent-data")
    if dry_run is None:
        token = resolve_hf_token(token)  # before any work
    run_dir = Path(run)
    manifest = _read_manifest(run_dir)
    config = config or _config_of(manifest)
    if config is not None:
        manifest = {**manifest, "config": config.model_dump(mode="json")}
    dataset = build_dataset(read_splits(run_dir))
    card = build_card(manifest, config, repo, dataset, secrets=[token])
    rows = {split: len(ds) for split, ds in dataset.items()}
    files = ["README.md", *(p for paths in shard_paths(dataset).values() for p in paths)]
    if dry_run is not None:
        out = Path(dry_run)
        written = _write(dataset, card, out)
        return PublishResult(repo, f"https://huggingface.co/datasets/{repo}", rows, written, str(card), out)
    return _push(dataset, card, repo, private=private, token=token, rows=rows, files=files)


def _push(dataset: Any, card: Any, repo: str, *, private: bool, token: str | None, rows: dict[str, int],
          files: list[str]) -> PublishResult:
    from huggingface_hub.errors import HfHubHTTPError

    shards = {split: len(paths) for split, paths in shard_paths(dataset).items()}
    summary = ", ".join(f"{n} {s}" for s, n in rows.items())
    try:
        data_commit = dataset.push_to_hub(
            repo, private=private, token=token, num_shards=shards, commit_message=f"distill: upload {summary} rows"
        )
        card_commit = card.push_to_hub(
            repo, token=token, repo_type="dataset", commit_message="distill: dataset card with provenance"
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hint = {
            401: "the token was refused: check HF_TOKEN or run `hf auth login` again",
            403: "the token cannot write to this repo: use a write token, or a repo under your own name",
        }.get(status or 0)
        raise PublishError(f"the Hub refused the upload to {repo}: {exc}", hint=hint) from None
    commits = [str(getattr(c, "oid", c)) for c in (data_commit, card_commit)]
    return PublishResult(repo, f"https://huggingface.co/datasets/{repo}", rows, files, str(card), None, commits)
