"""Bad input: every config mistake is one line naming the file and the key, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.config import load_config
from distill.errors import ConfigError

GOOD = {
    "name": "bad-input",
    "tools": [{"name": "Vector Search Tool", "description": "Searches.", "kind": "retriever"}],
    "sources": [{"path": "docs"}],
}


def _write(tmp_path: Path, data: object) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.md").write_text("Some text about BM25 ranking and retrieval of passages.\n")
    path = tmp_path / "cfg.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def _with(**changes: object) -> dict:
    data = {**GOOD, **changes}
    return data


CASES = [
    pytest.param(_with(tols=[]), "tols", "unknown key", id="misspelled-top-level-key"),
    pytest.param(_with(teacher={"modle": "gpt-4o"}), "teacher.modle", "unknown key", id="misspelled-nested-key"),
    pytest.param(_with(generation={"conversations": "many"}), "generation.conversations", "integer", id="wrong-type"),
    pytest.param(_with(sources=[{"path": "nowhere/"}]), "sources[0].path", "does not exist", id="missing-source"),
    pytest.param(
        _with(tools=[{"name": "X", "description": "d", "kind": "webhook"}]), "tools[0]", "unknown tool kind",
        id="unknown-tool-kind",
    ),
    pytest.param(_with(tools=GOOD["tools"] * 2), "tools", "used twice", id="duplicate-tool-names"),
    pytest.param(
        _with(tools=[{"name": "Search: docs", "description": "d", "kind": "retriever"}]), "tools[0].name", "':'",
        id="colon-in-tool-name",
    ),
    pytest.param(
        _with(tools=[{"name": "Search\ndocs", "description": "d", "kind": "retriever"}]), "tools[0].name", "'\\n'",
        id="newline-in-tool-name",
    ),
    pytest.param(
        _with(tools=[{"name": "Final Answer", "description": "d", "kind": "retriever"}]), "tools[0].name",
        "reserved", id="reserved-tool-name",
    ),
    pytest.param(
        _with(tools=[{"name": "Calc", "description": "d", "kind": "python", "function": "no_such_module:calc"}]),
        "tools[0].function", "cannot import", id="unimportable-python-tool",
    ),
    pytest.param(
        _with(tools=[{"name": "S", "description": "d", "kind": "retriever", "input_schema": {"type": "strin"}}]),
        "tools[0].input_schema", "not a valid JSON Schema", id="invalid-input-schema",
    ),
    pytest.param(_with(generation={"mix": {"tool": 0.5, "direct": 0.1, "multi_turn": 0.1}}), "generation.mix",
                 "sum to 1", id="mix-not-summing-to-one"),
    pytest.param("name: x\ntools: [\n  - oops", None, "YAML syntax error at line", id="yaml-syntax-error"),
    pytest.param("- just\n- a list\n", None, "top level must be a mapping", id="not-a-mapping"),
]


@pytest.mark.parametrize(("data", "key", "message"), CASES)
def test_bad_config_is_one_line_with_file_key_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: object, key: str | None, message: str
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert excinfo.value.key == key
    code = main(["generate", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith(f"distill: error: {path}: " + (f"{key}: " if key else ""))
    assert message in first
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, GOOD)
    monkeypatch.chdir("/")
    config = load_config(path)
    assert config.base_dir == tmp_path.resolve()


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, _with(tools=[{"name": "X", "description": "d", "kind": "webhook"}]))
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "generate", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "tools[0]: unknown tool kind; use one of: retriever, python" in proc.stderr


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parent.parent / "configs"
    for name in ("retrieval_agent.yaml", "multi_tool_agent.yaml"):
        config = load_config(root / name)
        assert config.tools[0].name == "Vector Search Tool"
