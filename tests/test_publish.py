"""`distill publish`: the dataset rows, the provenance card, the dry-run folder and a push to a fake Hub."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.cli import main
from distill.config import config_from_dict
from distill.errors import PublishError
from distill.generation.pipeline import generate
from distill.publishing.publish import publish
from distill.publishing.rows import row_to_example
from tests.conftest import BASE_CONFIG
from tests.fake_hub import FakeHub

# huggingface_hub's LFS upload (the fake Hub speaks LFS, not Xet) passes bytes as data=, which httpx2 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small offline run with a publish: section, generated once for the module."""
    data = copy.deepcopy(BASE_CONFIG)
    data["generation"] = {
        "conversations": 20,
        "seed": 1,
        "mix": {"tool": 0.6, "direct": 0.2, "multi_turn": 0.2},
    }
    data["publish"] = {"license": "apache-2.0", "tags": ["my-tag"], "pretty_name": "Test agent data"}
    base = tmp_path_factory.mktemp("publish-run")
    config = config_from_dict(data, file=str(base / "cfg.yaml"), base_dir=base)
    return generate(config, base / "run", progress=False).run_dir


@pytest.fixture
def run_dir(generated_run: Path, tmp_path: Path) -> Path:
    """A private copy of the generated run, with two reject reasons in its manifest."""
    run = tmp_path / "run"
    shutil.copytree(generated_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["rejects_by_reason"] = {"text_outside_block": 2, "truncated": 1}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture
def no_stored_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub finds no stored token and caches nothing in the user's HF_HOME."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf-home" / "harnesses.json"))


@pytest.fixture
def hub(no_stored_login: None) -> Any:
    """The fake Hub, installed as huggingface_hub's HTTP client for the test."""
    fake = FakeHub()
    fake.install()
    yield fake
    fake.uninstall()


def test_dry_run_folder_loads_with_datasets_and_holds_rows_and_card_metadata(
    run_dir: Path, tmp_path: Path
) -> None:
    import datasets
    from huggingface_hub import DatasetCard

    out = tmp_path / "dry"
    result = publish(run_dir, "me/agent-data", dry_run=out)
    assert sorted(result.files) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    train, validation = _lines(run_dir / "train.jsonl"), _lines(run_dir / "validation.jsonl")
    assert train and validation

    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {split: len(ds) for split, ds in loaded.items()} == {
        "train": len(train),
        "validation": len(validation),
    }
    assert [row_to_example(row) for row in loaded["train"]] == train
    assert [row_to_example(row) for row in loaded["validation"]] == validation

    card = DatasetCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "apache-2.0"
    assert meta["task_categories"] == ["text-generation"]
    assert {"synthetic", "distillation", "tool-use", "langchain", "my-tag"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["pretty_name"] == "Test agent data"
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "validation", "path": "data/validation-*"},
    ]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    text = card.text
    assert "`offline-deterministic` (provider: offline)" in text  # the teacher
    assert "`langchain-chat`" in text and "| Vector Search Tool | retriever |" in text
    assert "Mix**: tool 0.6, direct 0.2, multi-turn 0.2 (20 conversations, seed 1)" in text
    assert "| text_outside_block | 2 |" in text and "| truncated | 1 |" in text
    stats = manifest["tokens"]["train"]
    assert f"| train | {stats['n']} | {stats['min']} | {stats['mean']} |" in text
    assert 'load_dataset("me/agent-data")' in text
    config_yaml = text.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(config_yaml) == manifest["config"]


def test_dict_shaped_fields_are_json_strings_so_arrow_cannot_merge_their_keys(tmp_path: Path) -> None:
    """Tool definitions and tool calls whose keys differ between rows come back exactly, not padded with nulls."""
    import datasets

    def tool(name: str, props: dict[str, Any]) -> dict[str, Any]:
        params = {"type": "object", "properties": props, "required": list(props)}
        return {"type": "function", "function": {"name": name, "description": name, "parameters": params}}

    def call(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }

    rows = [
        {
            "messages": [
                {"role": "user", "content": "weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [call(1, "weather", {"city": "Oslo"})]},
                {"role": "tool", "tool_call_id": "call_1", "content": "3C"},
                {"role": "assistant", "content": "3C in Oslo."},
            ],
            "tools": [tool("weather", {"city": {"type": "string"}})],
        },
        {
            "messages": [
                {"role": "user", "content": "17 * 23?"},
                {"role": "assistant", "content": "earlier answer", "weight": 0},
                {"role": "user", "content": "and 2 + 2?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call(2, "calc", {"expr": "2+2", "exact": True})],
                },
                {"role": "tool", "tool_call_id": "call_2", "content": "4"},
                {"role": "assistant", "content": "4", "weight": 1},
            ],
            "tools": [tool("calc", {"expr": {"type": "string"}, "exact": {"type": "boolean"}})],
            "parallel_tool_calls": False,
        },
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "validation.jsonl").write_text("")
    (run / "manifest.json").write_text(json.dumps({"name": "tools-run", "agent_format": "openai-tools"}))

    naive = datasets.Dataset.from_list(rows)  # what users complain about: Arrow unifies the keys across rows
    assert naive[0]["tools"][0]["function"]["parameters"]["properties"].get("expr", "absent") is None

    result = publish(run, "me/tools", dry_run=tmp_path / "dry")
    assert result.rows == {"train": 2}  # an empty validation file gives no validation split
    loaded = datasets.load_dataset(str(tmp_path / "dry"), cache_dir=str(tmp_path / "cache"))
    features = loaded["train"].features
    assert features["tools"] == datasets.Value("string")
    assert features["messages"].feature["tool_calls"] == datasets.Value("string")
    assert [row_to_example(r) for r in loaded["train"]] == rows
    card = (tmp_path / "dry" / "README.md").read_text()
    assert "`tools`, `messages[].tool_calls`" in card and "function-calling" in card


def test_push_uploads_exactly_the_dry_run_files_to_the_hub(
    run_dir: Path, tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", hub.token)
    result = publish(run_dir, "tester/agent-data", private=True)
    assert hub.unknown == []
    repo = hub.repos["tester/agent-data"]
    assert repo.private is True
    assert [c["summary"] for c in repo.commits] == [
        "distill: upload " + ", ".join(f"{n} {s}" for s, n in result.rows.items()) + " rows",
        "distill: dataset card with provenance",
    ]
    publish(run_dir, "tester/agent-data", dry_run=tmp_path / "dry")
    dry = {
        p.relative_to(tmp_path / "dry").as_posix(): p.read_bytes()
        for p in (tmp_path / "dry").rglob("*")
        if p.is_file()
    }
    assert sorted(repo.files) == sorted(dry)
    for path, content in repo.files.items():
        assert content == dry[path], path  # byte for byte: the card and the parquet shards

    again = publish(run_dir, "tester/agent-data")  # a second publish updates the same repo
    assert again.rows == result.rows and len(hub.repos) == 1 and len(repo.commits) == 4


def test_missing_token_is_a_clear_error_before_any_work(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PublishError) as info:
        publish(tmp_path / "no-such-run", "tester/x")  # the token is checked before the run folder is read
    assert "HF_TOKEN" in str(info.value) and "hf auth login" in str(info.value)
    assert main(["publish", str(tmp_path / "no-such-run"), "--repo", "tester/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distill: error: no Hugging Face token") and "hint:" in err
    assert hub.requests == []


def test_a_refused_token_and_a_bad_repo_id_are_named(run_dir: Path, hub: FakeHub) -> None:
    with pytest.raises(PublishError) as info:
        publish(run_dir, "tester/agent-data", token="hf_wrong_token_000000")
    assert "refused" in str(info.value) and "401" in str(info.value)
    assert hub.repos == {}
    with pytest.raises(PublishError, match="not a Hub repo id"):
        publish(run_dir, "no-owner", token=hub.token)


def test_cli_dry_run_and_config_override(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy.deepcopy(BASE_CONFIG)
    data["publish"] = {"license": "cc-by-4.0", "tags": ["other-tag"]}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "dry"
    assert main(["publish", str(run_dir), "--repo", "me/x", "--dry-run", str(out), "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "dry run" in printed and "nothing was pushed" in printed
    head = (out / "README.md").read_text().split("---")[1]
    meta = yaml.safe_load(head)
    assert meta["license"] == "cc-by-4.0" and "other-tag" in meta["tags"] and "my-tag" not in meta["tags"]
    card_config = yaml.safe_load((out / "README.md").read_text().split("```yaml\n")[1].split("```")[0])
    assert card_config["generation"]["conversations"] == 20  # the run's config, not the override's 40
    assert card_config["publish"]["license"] == "cc-by-4.0"


def test_redact_hides_key_like_fields_secret_values_and_url_credentials() -> None:
    from distill.redact import REDACTED, redact

    config = {
        "teacher": {"api_key": "abc", "max_tokens": 1024, "base_url": "https://bob:hunter2@proxy.example/v1"},
        "tools": [{"name": "Search", "headers": {"Authorization": "Bearer xyz", "x-api-key": "k"}}],
        "note": "the key sk-live-123456 leaked here",
    }
    assert redact(config, ["sk-live-123456"]) == {
        "teacher": {
            "api_key": REDACTED,
            "max_tokens": 1024,
            "base_url": f"https://{REDACTED}@proxy.example/v1",
        },
        "tools": [{"name": "Search", "headers": {"Authorization": REDACTED, "x-api-key": REDACTED}}],
        "note": f"the key {REDACTED} leaked here",
    }
