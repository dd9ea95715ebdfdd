"""Shards and merge: a run split into shards (`generate --shard I/N`), merged (`distill merge`) and resumed equals the
local run byte for byte, ledger rows included; shards that do not make one run are refused."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.config import load_config
from distill.errors import RunStopped
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.generation.shards import Shard, ShardError, generate_shard, merge_shards
from tests.conftest import BASE_CONFIG, CORPUS
from tests.fake_openai import RpmLimit, chat_completion
from tests.test_resume import Teacher, _config_file


class Rejecting(Teacher):
    """The resume tests' teacher, with prose around every action of one conversation in four: always rejected."""

    @staticmethod
    def answer(body: dict) -> dict:
        if not body.get("response_format"):
            asked = re.search(r"item (\d+) say", json.dumps(body["messages"]))
            if asked and int(asked.group(1)) % 4 == 0:
                return chat_completion("Sure. " + render_action("Vector Search Tool", "bm25"))
        return Teacher.answer(body)


SAME = ("train.jsonl", "validation.jsonl", "rejected.jsonl", "trajectories.jsonl", "plans.jsonl")


def _offline_config(tmp_path: Path, **generation) -> Path:
    data = json.loads(json.dumps(BASE_CONFIG))
    data["generation"].update({"conversations": 48, **generation})
    data["export"] = {"validation_fraction": 0.2}  # dedup on: it runs over the whole run, after the merge
    data["judge"] = {"enabled": True}
    path = tmp_path / f"offline-{len(list(tmp_path.glob('offline-*')))}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _same_run(local: Path, merged: Path) -> None:
    for name in SAME:
        assert (local / name).read_bytes() == (merged / name).read_bytes(), name
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (local, merged))
    for key in set(a) | set(b):
        if key not in ("timing", "resume", "teacher_usage"):
            assert a.get(key) == b.get(key), key


def test_four_shards_from_the_command_line_merge_into_the_local_run(tmp_path: Path, capsys) -> None:
    config = _offline_config(tmp_path)
    assert main(["generate", str(config), "--out", str(tmp_path / "local"), "--no-progress"]) == 0
    dirs = []
    for i in (3, 1, 4, 2):  # the order shards finish in does not matter
        out = tmp_path / "shards" / str(i)
        assert main(["generate", str(config), "--shard", f"{i}/4", "--out", str(out), "--no-progress"]) == 0
        assert json.loads((out / "shard.json").read_text())["conversations"] == 12
        assert not (out / "train.jsonl").exists()  # a shard exports nothing
        dirs.append(str(out))
    capsys.readouterr()
    assert main(["merge", *dirs, "--out", str(tmp_path / "run")]) == 0
    said = capsys.readouterr().out
    assert "merged 4 shards: 48 conversations" in said and f"distill generate {config} --out" in said
    assert main(["generate", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    _same_run(tmp_path / "local", tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    extra = manifest["top_up"]["extra_conversations"]  # (the judge's rejections are topped up)
    # the shards' work is kept; only the top-up's conversations are new
    assert manifest["resume"] == {"resumed_conversations": 48, "new_conversations": extra}


def test_shards_against_an_endpoint_merge_into_the_local_run_and_its_ledger(fake_openai, tmp_path: Path) -> None:
    script = Rejecting()  # answers by content; rejects some conversations, so the mix top-up has work to do
    fake_openai.route("POST", r"/v1/chat/completions", script)
    config = load_config(_config_file(tmp_path, generation={"max_extra_conversations": 20, "mix_tolerance": 0.0}))
    generate(config, tmp_path / "local", progress=False)
    local_top_up = json.loads((tmp_path / "local" / "manifest.json").read_text())["top_up"]
    assert local_top_up["extra_conversations"] > 0

    dirs = [tmp_path / f"s{i}" for i in (1, 2, 3)]
    for i, out in enumerate(dirs, start=1):
        generate_shard(config, Shard(i, 3), out, progress=False)
    merged = merge_shards(dirs, tmp_path / "run")
    assert merged.conversations == 30 and merged.ledger_rows > 0
    answered_before = sum(script.answered.values())
    generate(config, tmp_path / "run", progress=False)
    _same_run(tmp_path / "local", tmp_path / "run")

    def keys(run: Path) -> set[str]:
        with sqlite3.connect(run / "ledger.sqlite") as db:
            return {k for (k,) in db.execute("SELECT key FROM responses WHERE ok = 1")}

    assert keys(tmp_path / "local") == keys(tmp_path / "run")
    shard_keys = set().union(*(keys(d) for d in dirs))
    # after the merge only the top-up is asked of the teacher: the shards' requests are answered by the ledger
    assert sum(script.answered.values()) - answered_before == len(keys(tmp_path / "run") - shard_keys)


def test_a_run_stopped_during_its_top_up_resumes_into_the_uninterrupted_run(fake_openai, tmp_path: Path) -> None:
    # The top-up is decided while conversations finish; a run stopped by its budget (some of the planned
    # conversations and none, or some, of the extra ones done) plans the same extra conversations when resumed.
    script = Rejecting()
    fake_openai.route("POST", r"/v1/chat/completions", script)
    changes = {"teacher": {"price": {"input": 100.0, "output": 100.0}}}
    generation = {"max_extra_conversations": 20, "mix_tolerance": 0.0}
    generate(load_config(_config_file(tmp_path, generation=generation, **changes)), tmp_path / "whole", progress=False)
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert whole["top_up"]["extra_conversations"] > 0
    usd = whole["teacher_usage"]["run_folder"]["usd"]
    for share in (0.5, 0.9):  # stopped before the first top-up decision, and after it
        run = tmp_path / f"run-{share}"
        tight = load_config(_config_file(tmp_path, generation={**generation, "max_cost_usd": round(usd * share, 4)},
                                         **changes))
        with pytest.raises(RunStopped):
            generate(tight, run, progress=False)
        roomy = load_config(_config_file(tmp_path, generation={**generation, "max_cost_usd": usd * 2}, **changes))
        generate(roomy, run, progress=False)
        for name in SAME:
            assert (tmp_path / "whole" / name).read_bytes() == (run / name).read_bytes(), (share, name)
        resumed = json.loads((run / "manifest.json").read_text())
        for key in ("top_up", "coverage", "conversations", "examples", "judge"):
            assert resumed.get(key) == whole.get(key), (share, key)


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, list[Path]]:
    config = load_config(_offline_config(tmp_path, conversations=12))
    dirs = [tmp_path / f"s{i}" for i in (1, 2)]
    for i, out in enumerate(dirs, start=1):
        generate_shard(config, Shard(i, 2), out, progress=False)
    return tmp_path, dirs


def test_merge_refuses_the_same_shard_twice_and_missing_shards(shards) -> None:
    tmp_path, (one, _) = shards
    with pytest.raises(ShardError, match="shard 1/2 is given twice"):
        merge_shards([one, one], tmp_path / "run")
    with pytest.raises(ShardError, match="1 of the 2 shards are missing: 2/2") as caught:
        merge_shards([one], tmp_path / "run")
    assert "--shard 2/2" in (caught.value.hint or "")
    assert not (tmp_path / "run" / "trajectories.jsonl").exists()


def test_merge_refuses_a_shard_of_another_config_or_split(shards) -> None:
    tmp_path, (one, two) = shards
    other = load_config(_offline_config(tmp_path, conversations=12, seed=9))
    generate_shard(other, Shard(2, 2), tmp_path / "other", progress=False)
    with pytest.raises(ShardError, match="shards of different runs"):
        merge_shards([one, tmp_path / "other"], tmp_path / "run")
    split = load_config(_offline_config(tmp_path, conversations=12))
    generate_shard(split, Shard(2, 3), tmp_path / "third", progress=False)
    with pytest.raises(ShardError, match="shards of different splits"):
        merge_shards([one, two, tmp_path / "third"], tmp_path / "run")


def test_merge_refuses_an_unfinished_shard_and_a_folder_holding_a_run(shards) -> None:
    tmp_path, (one, two) = shards
    (two / "shard.json").unlink()  # what a shard stopped by its budget leaves
    with pytest.raises(ShardError, match="not a finished shard"):
        merge_shards([one, two], tmp_path / "run")
    config = load_config(_offline_config(tmp_path, conversations=12))
    generate_shard(config, Shard(2, 2), two, progress=False)
    generate(config, tmp_path / "local", progress=False)
    with pytest.raises(ShardError, match="holds a run already"):
        merge_shards([one, two], tmp_path / "local")


def test_shard_argument_is_checked(tmp_path: Path, capsys) -> None:
    config = _offline_config(tmp_path)
    with pytest.raises(SystemExit):
        main(["generate", str(config), "--shard", "5/4"])
    assert "between 1 and N" in capsys.readouterr().err
    assert main(["generate", str(config), "--shard", "1/4", "--batch"]) == 2
    assert "--shard cannot be combined with --batch" in capsys.readouterr().err
    assert Shard.parse("2/3").select(list(range(8))) == [1, 4, 7]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ray_cluster():
    """Ray in-process on loopback (two CPUs), for this module's Ray tests."""
    import os

    ray = pytest.importorskip("ray")  # the test extra installs it
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # the tasks' workers take the fake endpoint's key from the job (the driver's environment is the test's)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OPENAI_API_KEY": "sk-test-not-a-real-key"}})
    yield ray
    ray.shutdown()


def test_a_ray_run_equals_the_local_run(ray_cluster, tmp_path: Path, capsys) -> None:
    config = _offline_config(tmp_path, conversations=40)
    assert main(["generate", str(config), "--out", str(tmp_path / "local"), "--no-progress"]) == 0
    argv = ["generate", str(config), "--executor", "ray", "--shards", "3", "--out", str(tmp_path / "run"),
            "--no-progress"]
    assert main(argv) == 0
    _same_run(tmp_path / "local", tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == ["1-of-3", "2-of-3", "3-of-3"]
    merged = json.loads((tmp_path / "run" / "merged.json").read_text())
    assert [s["shard"] for s in merged["shards"]] == ["1/3", "2/3", "3/3"]
    (tmp_path / "run" / "train.jsonl").unlink()
    assert main(argv) == 0  # again: the finished shards are not run again, the run is finished from them
    _same_run(tmp_path / "local", tmp_path / "run")


def test_the_ray_tasks_read_no_source(ray_cluster, tmp_path: Path, monkeypatch) -> None:
    """The sources exist only while the driver reads them (its prepare before the tasks, its finish after them):
    the tasks, in Ray's worker processes (which this process's patch does not reach), find no source at the config's
    path, and the run still equals the local run, over the index the driver shipped them."""
    from distill.generation import pipeline
    from distill.generation.ray_executor import generate_on_ray

    sources, stash = tmp_path / "sources", tmp_path / "stash"
    shutil.copytree(CORPUS, sources)
    data = json.loads(json.dumps(BASE_CONFIG))
    data["sources"] = [{"path": "sources"}]
    data["generation"]["conversations"] = 24
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(tmp_path / "cfg.yaml")
    generate(config, tmp_path / "local", progress=False)
    sources.rename(stash)
    reads = []
    real = pipeline.load_documents

    def only_while_the_driver_reads(config):  # type: ignore[no-untyped-def]
        shutil.copytree(stash, sources)
        try:
            reads.append(len(list(sources.rglob("*"))))
            return real(config)
        finally:
            shutil.rmtree(sources)

    monkeypatch.setattr(pipeline, "load_documents", only_while_the_driver_reads)
    generate_on_ray(config, tmp_path / "run", shards=2, progress=False)
    _same_run(tmp_path / "local", tmp_path / "run")
    assert len(reads) == 2 and reads[0] > 0 and not sources.exists()  # the driver's two reads, no other
    for i in (1, 2):
        assert json.loads((tmp_path / "run" / "shards" / f"{i}-of-2" / "shard.json").read_text())["conversations"] == 12


def test_ray_tasks_together_keep_the_limit_the_endpoint_announces(ray_cluster, fake_openai, tmp_path: Path) -> None:
    """No rpm configured: the endpoint announces 1,200 rpm in its headers and refuses what goes over (a bucket of 4).
    Each task pacing itself at what it heard would send twice that (a dozen 429s or more in this run, and rates
    learned from them); sharing the limit through the actor, the two keep it together and both know it."""
    from distill.generation.ray_executor import generate_on_ray

    limit = RpmLimit(Teacher(), 1200, burst=4)
    fake_openai.route("POST", r"/v1/chat/completions", limit)
    config = load_config(_config_file(tmp_path, teacher={"base_url": fake_openai.base_url, "concurrency": 8},
                                      generation={"conversations": 12}))
    generate(config, tmp_path / "local", progress=False)
    answered = limit.counts[200]
    limit.counts.clear()
    generate_on_ray(config, tmp_path / "run", shards=2, progress=False)
    _same_run(tmp_path / "local", tmp_path / "run")
    assert limit.counts[200] == answered  # the same requests, each once (the driver's finish answers from the ledger)
    assert limit.counts.get(429, 0) <= 8  # the first requests, before any answer announced the limit
    shards = [json.loads((tmp_path / "run" / "shards" / f"{i}-of-2" / "shard.json").read_text()) for i in (1, 2)]
    limits = [s["teacher_usage"]["limits"] for s in shards]
    assert [x["rpm_from_headers"] for x in limits] == [1200, 1200]  # the run's limit, known to both tasks
    assert all(x["rpm_in_force"] <= 1200 for x in limits)  # (or the rate learned from the first 429s, if lower)


def test_concurrency_is_divided_among_the_workers_and_rates_are_shared(make_config) -> None:
    from distill.generation.ray_executor import divided

    config = make_config(teacher={"provider": "openai", "model": "gpt-4o", "rpm": 600, "concurrency": 16,
                                  "endpoints": [{"base_url": "http://127.0.0.1:1/v1", "rpm": 300, "concurrency": 8}]})
    shared = divided(config, 4)
    assert (shared.teacher.rpm, shared.teacher.tpm, shared.teacher.concurrency) == (600, None, 4)
    assert (shared.teacher.endpoints[0].rpm, shared.teacher.endpoints[0].concurrency) == (300, 2)
    assert shared.judge.concurrency == 2 and divided(config, 64).teacher.concurrency == 1
