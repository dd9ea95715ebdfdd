"""`distill publish` with preference pairs: a `preferences` config beside the default one, dry run and push."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill.publishing.preference_rows import row_to_preference
from distill.publishing.publish import publish
from tests.fake_hub import FakeHub
from tests.test_finetune_dpo import preference_run  # noqa: F401 - the module fixture: a run with preference pairs
from tests.test_publish import hub, no_stored_login  # noqa: F401 - fixtures

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_dry_run_has_a_preferences_config_that_loads_back_exactly(preference_run: Path, tmp_path: Path) -> None:  # noqa: F811
    import datasets

    result = publish(preference_run, "me/agent-data", dry_run=tmp_path / "dry")
    assert "preferences/train-00000-of-00001.parquet" in result.files
    assert "config_name: preferences" in result.card and "## Preference pairs" in result.card
    default = datasets.load_dataset(str(tmp_path / "dry"))
    assert set(default) == {"train", "validation"}
    assert len(default["train"]) == len(_lines(preference_run / "train.jsonl"))  # the default config is unchanged
    pairs = datasets.load_dataset(str(tmp_path / "dry"), "preferences")
    for split in ("train", "validation"):
        lines = _lines(preference_run / f"preferences.{split}.jsonl")
        assert [row_to_preference(r) for r in pairs[split]] == lines
        assert result.rows[f"preferences/{split}"] == len(lines)
    plain = publish(preference_run, "me/agent-data", dry_run=tmp_path / "plain", preferences=False)
    assert not any(f.startswith("preferences/") for f in plain.files) and "config_name: preferences" not in plain.card


def test_push_uploads_the_preferences_config_as_the_dry_run_has_it(
    preference_run: Path, tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("HF_TOKEN", hub.token)
    publish(preference_run, "tester/agent-data")
    assert hub.unknown == []
    repo = hub.repos["tester/agent-data"]
    publish(preference_run, "tester/agent-data", dry_run=tmp_path / "dry")
    dry = {p.relative_to(tmp_path / "dry").as_posix(): p.read_bytes() for p in (tmp_path / "dry").rglob("*") if p.is_file()}
    assert sorted(repo.files) == sorted(dry)
    for path, content in repo.files.items():
        assert content == dry[path], path
