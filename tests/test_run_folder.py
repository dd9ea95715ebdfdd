"""The run folder's one owner (distill/run_folder.py), the shared JSON checks (distill/schema.py), the one Rejection,
and what a user sees when the run folder or the disk lets them down: one line, no traceback, no file left half-written.
"""

from __future__ import annotations

import ast
import errno
import json
import logging
import os
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.errors import Rejection, RunFolderError
from distill.run_folder import (
    MANIFEST,
    RunFolder,
    config_of,
    output_folder,
    read_jsonl,
    read_manifest,
    write_jsonl,
    write_text,
)
from tests.conftest import BASE_CONFIG, REPO

PACKAGE = REPO / "distill"
SMALL = {"conversations": 8, "seed": 1, "mix": {"tool": 0.5, "direct": 0.25, "multi_turn": 0.25}}


# -- helpers: a config file, a generated run, a full disk, a read-only folder -----------------------------------------
def _config_file(tmp_path: Path, **changes) -> Path:
    data = {**BASE_CONFIG, "generation": SMALL, **changes}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """(config file, run folder) of a small offline run, with its report written."""
    config = _config_file(tmp_path)
    folder = tmp_path / "run"
    assert main(["generate", str(config), "--out", str(folder), "--no-progress"]) == 0
    assert main(["report", str(folder)]) == 0
    return config, folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _inside(path: os.PathLike[str] | str | bytes, folder: Path) -> bool:
    return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())


def _full_disk(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Every write to a file under `folder` stores half its bytes, then fails with ENOSPC (as a full disk does)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell which file a write goes to")
    real = os.write

    def write(fd: int, data) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return real(fd, data)
        if not _inside(target, folder):
            return real(fd, data)
        real(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make `folder` read-only: chmod, and (since root may ignore the mode) no file created or written under it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _inside(path, folder):
            raise refuse(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def mkdir(path, mode=0o777, *, dir_fd=None):
        if _inside(path, folder) and Path(os.fsdecode(path)).resolve() != folder.resolve():
            raise refuse(path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


def _one_line_error(capsys: pytest.CaptureFixture[str], *says: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("distill: error: ")]
    assert len(errors) == 1 and all(line.startswith(("distill: error: ", "hint: ")) for line in lines), err
    for text in says:
        assert text in errors[0], err
    return errors[0]


# -- one owner: the file names are spelled in run_folder.py only --------------------------------------------------------
def test_run_folder_file_names_are_spelled_only_in_run_folder() -> None:
    names = {"manifest.json", "train.jsonl", "validation.jsonl", "rejected.jsonl", "plans.jsonl", "trajectories.jsonl",
             "run.json", "ledger.sqlite", "finetune.json", "report.html", "report.json", "chunks.jsonl", "shard.json",
             "merged.json"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "run_folder.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []
    writers = ("run_folder.py", "atomic_files.py")  # the atomic writes live in atomic_files, re-exported by run_folder
    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py") if p.name not in writers}
    assert [str(p) for p, text in sources.items() if ".tmp" in text or "os.replace" in text] == []
    assert [str(p) for p, text in sources.items() if "generation.pipeline import default_run_dir" in text
            or "generation.pipeline import load_trajectories" in text] == []


# -- atomic writes ----------------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"n": 1}, {"n": 2}])
    before = path.read_bytes()
    assert before == b'{"n": 1}\n{"n": 2}\n'
    _full_disk(monkeypatch, tmp_path)
    with pytest.raises(RunFolderError) as err:
        write_jsonl(path, ({"n": i} for i in range(1000)))
    assert str(path) in err.value.message and "No space left" in err.value.message
    assert "free some space" in (err.value.hint or "")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]

    def boom():  # any error while the rows are produced: the same
        yield {"n": 0}
        raise KeyError("bug")

    monkeypatch.undo()
    with pytest.raises(KeyError):
        write_jsonl(path, boom())
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
    write_text(path, "new\n")
    assert path.read_text() == "new\n"


def test_output_folder_refuses_a_file_and_a_folder_it_cannot_write(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        output_folder(tmp_path / "a-file")
    with pytest.raises(RunFolderError, match="a parent of it is a file"):
        output_folder(tmp_path / "a-file" / "run")
    assert output_folder(tmp_path / "new" / "run").is_dir()
    _read_only(monkeypatch, tmp_path / "ro")
    with pytest.raises(RunFolderError, match="cannot write in .*Permission denied"):
        output_folder(tmp_path / "ro")
    with pytest.raises(RunFolderError, match="cannot create .*Permission denied"):
        output_folder(tmp_path / "ro" / "run")


# -- JSONL reading ----------------------------------------------------------------------------------------------------
def test_a_cut_last_line_is_left_out_and_reported_a_bad_line_before_it_is_an_error(tmp_path: Path, caplog) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert f"{path}:4: the last line is cut short" in caplog.text
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(RunFolderError, match=rf"{path}:2: not a valid line"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


# -- the manifest and the config it records ---------------------------------------------------------------------------
def test_manifest_is_typed_and_config_of_says_when_the_recorded_config_no_longer_validates(run) -> None:
    _, folder = run
    manifest = read_manifest(folder)
    assert manifest.conversations["requested"] == 8 and manifest.split.validation_documents
    assert manifest.file(folder, "train") == RunFolder(folder).train
    assert config_of(manifest, folder).generation.conversations == 8

    data = json.loads((folder / MANIFEST).read_text())
    data["config"]["generation"]["conversations"] = "many"
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(RunFolderError) as err:
        config_of(read_manifest(folder), folder)
    assert "no longer validates: config.generation.conversations" in err.value.message
    assert "distill export CONFIG --run RUN" in (err.value.hint or "")

    data["split"] = {"validation_documents": "all"}
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(RunFolderError, match="split.validation_documents"):
        read_manifest(folder)


def test_finetune_and_publish_refuse_a_recorded_config_that_no_longer_validates(run, tmp_path, capsys) -> None:
    _, folder = run
    data = json.loads((folder / MANIFEST).read_text())
    data["config"]["export"]["model"] = 42
    (folder / MANIFEST).write_text(json.dumps(data))
    assert main(["finetune", str(folder), "--estimate"]) == 2
    _one_line_error(capsys, "no longer validates", "config.export.model")
    assert main(["publish", str(folder), "--repo", "me/data", "--dry-run", str(tmp_path / "dry")]) == 2
    _one_line_error(capsys, "no longer validates")


# -- shared vocabulary ------------------------------------------------------------------------------------------------
def test_one_schema_checker_and_one_duplicate_key_loader() -> None:
    from distill.schema import DuplicateKeyError, loads_unique, schema_problem, validator

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert validator(schema) is validator(json.loads(json.dumps(schema)))  # cached by content, not by id()
    assert schema_problem(schema, {"n": 1}) is None
    assert "is not of type 'integer'" in schema_problem(schema, {"n": "x"})
    assert loads_unique('{"a": 1}') == {"a": 1}
    with pytest.raises(DuplicateKeyError, match="duplicate key 'a'"):
        loads_unique('{"a": 1, "a": 2}')
    assert issubclass(DuplicateKeyError, ValueError)
    sources = [p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py") if p.name != "schema.py"]
    assert not [s for s in sources if "object_pairs_hook" in s or "validator_for" in s]


def test_every_stage_rejects_with_one_rejection() -> None:
    from distill.agent.simulated import SimulationError
    from distill.formats import NotRenderable
    from distill.generation.questions import QuestionError
    from distill.teachers.base import TeacherCallError

    for cls in (SimulationError, NotRenderable, QuestionError, TeacherCallError):  # eval's calls: TeacherCallError
        exc = cls("bad_question", "no questions", "raw text")
        assert isinstance(exc, Rejection) and (exc.reason, exc.detail, exc.raw) == ("bad_question", "no questions",
                                                                                    "raw text")


# -- issue 16 item 8: one line, not a traceback -----------------------------------------------------------------------
def test_export_with_a_cut_last_line_drops_it_and_says_where(run, capsys, caplog) -> None:
    config, folder = run
    path = folder / "trajectories.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1][:50]]))  # kill -9 in the middle of the last append
    with caplog.at_level(logging.WARNING):
        assert main(["export", str(config), "--run", str(folder)]) == 0
    assert f"{path}:{len(lines)}: the last line is cut short" in caplog.text
    assert "Traceback" not in capsys.readouterr().err
    assert read_manifest(folder).conversations["requested"] == len(lines) - 1

    path.write_text("\n".join([lines[0][:50]] + lines[1:]) + "\n")  # a damaged line that is not the last
    assert main(["export", str(config), "--run", str(folder)]) == 2
    _one_line_error(capsys, f"{path}:1: not a valid line")


def test_report_with_a_corrupt_manifest(run, capsys) -> None:
    _, folder = run
    (folder / MANIFEST).write_text('{"name": "x", "conver')
    assert main(["report", str(folder)]) == 2
    _one_line_error(capsys, f"{folder / MANIFEST} is not valid JSON")
    (folder / MANIFEST).write_text("[1, 2]")
    assert main(["report", str(folder)]) == 2
    _one_line_error(capsys, "is not a JSON object")


def test_export_repairs_a_corrupt_manifest(run, capsys) -> None:
    config, folder = run
    (folder / MANIFEST).write_text("{")
    assert main(["export", str(config), "--run", str(folder)]) == 0
    assert read_manifest(folder).conversations["requested"] == 8


def test_generate_out_naming_a_file(tmp_path: Path, capsys) -> None:
    config = _config_file(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    assert main(["generate", str(config), "--out", str(tmp_path / "taken"), "--no-progress"]) == 2
    _one_line_error(capsys, "--out", "is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_read_only_output_folders(run, tmp_path: Path, capsys, monkeypatch) -> None:
    config, folder = run
    ro = tmp_path / "read-only"
    _read_only(monkeypatch, ro)
    assert main(["generate", str(config), "--out", str(ro), "--no-progress"]) == 2
    _one_line_error(capsys, f"cannot write in {ro}", "Permission denied")
    assert main(["eval", str(config), "--model", "student", "--run", str(folder), "--out", str(ro / "eval")]) == 2
    _one_line_error(capsys, f"cannot create {ro / 'eval'}", "Permission denied")
    assert main(["publish", str(folder), "--repo", "me/data", "--dry-run", str(ro)]) == 2
    _one_line_error(capsys, f"cannot write in {ro}")
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("command", ["generate", "export", "report"])
def test_a_full_disk_leaves_the_old_files_and_no_temp_file(run, command, capsys, monkeypatch) -> None:
    config, folder = run
    before = _snapshot(folder)
    _full_disk(monkeypatch, folder)
    argv = {
        "generate": ["generate", str(config), "--out", str(folder), "--no-progress"],
        "export": ["export", str(config), "--run", str(folder)],
        "report": ["report", str(folder)],
    }[command]
    assert main(argv) == 2
    _one_line_error(capsys, "cannot write", "No space left on device")
    monkeypatch.undo()
    assert [p for p in folder.rglob("*") if ".tmp" in p.name] == []
    after = _snapshot(folder)
    assert {k: v for k, v in after.items() if k in before} == before  # every file as it was
    assert set(after) == set(before)


# -- issue 16 item 9: no line twice -----------------------------------------------------------------------------------
def test_the_demo_exports_no_line_twice(tmp_path: Path) -> None:
    from distill.config import load_config
    from distill.generation.pipeline import generate

    result = generate(load_config(REPO / "configs" / "retrieval_agent.yaml"), tmp_path / "demo", progress=False)
    lines = result.train.read_text().splitlines() + result.validation.read_text().splitlines()
    keys = [json.dumps(json.loads(line), sort_keys=True) for line in lines]
    assert len(keys) == len(set(keys))
    manifest = read_manifest(result.run_dir).as_dict()
    dropped = manifest["duplicates"]["lines"]["dropped"]  # lines shared by conversations (none in today's demo;
    # tests/test_formats.py has a run where three conversations write the same line)
    accepted = [t for t in map(json.loads, result.run_dir.joinpath("trajectories.jsonl").read_text().splitlines())
                if t["outcome"] == "accepted"]
    rejected_later = {r["id"] for r in map(json.loads, result.rejected.read_text().splitlines())}
    turns = sum(len(t["turns"]) for t in accepted if t["id"] not in rejected_later)
    assert len(lines) + dropped == turns  # every accepted turn is a line, or the same line already written
