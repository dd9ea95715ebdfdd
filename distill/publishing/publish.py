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

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.errors import PublishError, RunFolderError
from distill.publishing.card import build_card
from distill.publishing.rows import build_dataset, read_splits, shard_paths
from distill.run_folder import config_of, output_folder, read_manifest, write_text

__all__ = ["PublishResult", "publish", "resolve_hf_token"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    output_folder(out_dir, option="--dry-run")
    files = ["README.md"]
    write_text(out_dir / "README.md", str(card))
    for split, paths in shard_paths(dataset).items():
        for index, rel in enumerate(paths):
            target = out_dir / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                dataset[split].shard(num_shards=len(paths), index=index, contiguous=True).to_parquet(str(target))
            except OSError as exc:
                raise RunFolderError(f"cannot write {target}: {exc.strerror or exc}",
                                     hint="free some space or make the folder writable, and rerun") from None
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
    preferences: bool = True,
) -> PublishResult:
    """Push a run folder's train/validation files and a provenance card to the Hub dataset repo `repo`
    (`owner/name`); with `dry_run=DIR`, write exactly those files to DIR instead (no token needed).

    The card describes the config recorded in the run's manifest; `config` (another config) only supplies the
    card's `publish:` section (license, tags, title). The run's preference pairs (`export.preferences`), when it
    has any, go along as the dataset's `preferences` config unless `preferences=False`."""
    if not _REPO_ID.match(repo):
        raise PublishError(f"{repo!r} is not a Hub repo id", hint="use OWNER/NAME, e.g. my-org/my-agent-data")
    if dry_run is None:
        token = resolve_hf_token(token)  # before any work
    else:
        output_folder(dry_run, option="--dry-run")  # before any work too: a folder that cannot be written fails now
    run_dir = Path(run)
    typed = read_manifest(run_dir)
    manifest = typed.as_dict()
    run_config = config_of(typed, run_dir)
    override = config.publish if config is not None else None
    if override is not None and isinstance(manifest.get("config"), dict):
        manifest = {**manifest, "config": {**manifest["config"], "publish": override.model_dump(mode="json")}}
    dataset = build_dataset(read_splits(run_dir))
    card = build_card(manifest, run_config, repo, dataset, publish=override, secrets=[token] if token else [])
    rows = {split: len(ds) for split, ds in dataset.items()}
    files = ["README.md", *(p for paths in shard_paths(dataset).values() for p in paths)]
    pairs = _preferences(run_dir, card, rows, files) if preferences else None
    if dry_run is not None:
        out = Path(dry_run)
        written = _write(dataset, card, out)
        if pairs is not None:
            from distill.publishing.preference_rows import write_preference_files

            written += write_preference_files(pairs, out)
        return PublishResult(repo, f"https://huggingface.co/datasets/{repo}", rows, written, str(card), out)
    return _push(dataset, card, repo, private=private, token=token, rows=rows, files=files, pairs=pairs)


def _preferences(run_dir: Path, card: Any, rows: dict[str, int], files: list[str]) -> Any:
    """The run's preference pairs as a DatasetDict (None when it has none), declared in the card."""
    from distill.publishing.preference_rows import (
        add_to_card,
        build_preference_dataset,
        preference_paths,
        read_preference_splits,
    )

    splits = read_preference_splits(run_dir)
    if not splits:
        return None
    pairs = build_preference_dataset(splits)
    add_to_card(card, pairs)
    rows.update({f"preferences/{name}": len(ds) for name, ds in pairs.items()})
    files.extend(preference_paths(pairs).values())
    return pairs


def _push(
    dataset: Any,
    card: Any,
    repo: str,
    *,
    private: bool,
    token: str | None,
    rows: dict[str, int],
    files: list[str],
    pairs: Any = None,
) -> PublishResult:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    shards = {split: len(paths) for split, paths in shard_paths(dataset).items()}
    summary = ", ".join(f"{n} {s}" for s, n in rows.items())
    try:
        data_commit = dataset.push_to_hub(
            repo,
            private=private,
            token=token,
            num_shards=shards,
            commit_message=f"distill: upload {summary} rows",
        )
        if pairs is not None:  # the `preferences` config, under preferences/
            pairs.push_to_hub(repo, config_name="preferences", data_dir="preferences", private=private, token=token,
                              num_shards=dict.fromkeys(pairs, 1), commit_message="distill: upload preference pairs")
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
    except httpx2.TransportError as exc:
        raise PublishError(
            f"cannot reach the Hub to upload {repo}: {exc}", hint="check the network (and HF_ENDPOINT); rerun"
        ) from None
    except ValueError as exc:  # the Hub's card validation (POST /api/validate-yaml) answered 400
        raise PublishError(f"the Hub rejected the dataset card of {repo}: {exc}") from None
    commits = [str(getattr(c, "oid", c)) for c in (data_commit, card_commit)]
    return PublishResult(
        repo, f"https://huggingface.co/datasets/{repo}", rows, files, str(card), None, commits
    )
