"""How tools run: off the event loop and concurrently, with timeouts, None as an error, counts in the manifest,
`generation.reject_tool_errors`, Ctrl-C with a tool that never returns, and a third-party tool kind."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from distill.agent.tools import ToolBox, register_tool_kind
from distill.config import ToolSpec, config_from_dict, register_tool_model, tool_kinds
from distill.errors import ConfigError
from distill.generation.pipeline import generate, load_trajectories
from tests import runtime_tools
from tests.conftest import BASE_CONFIG, REPO


def _tool(name: str, function: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": f"The {name} tool.", "kind": "python",
            "function": f"tests.runtime_tools:{function}", **extra}


def test_python_tools_run_off_the_loop_concurrently_up_to_teacher_concurrency(make_config) -> None:
    config = make_config(tools=[_tool("Overlap", "overlap")], teacher={"provider": "offline", "concurrency": 3})
    box = ToolBox(config)
    runtime_tools.STATE.update(active=0, most=0, threads=set(), barrier=threading.Barrier(3, timeout=20))

    async def five() -> tuple[list[Any], int]:
        loop_thread = threading.get_ident()
        runtime_tools.STATE["barrier"] = threading.Barrier(3, timeout=20)
        first = await asyncio.gather(*(box.arun("Overlap", f"q{i}") for i in range(3)))  # all three must meet
        return first, loop_thread

    observations, loop_thread = asyncio.run(five())
    assert [o.text for o in observations] == ["seen q0", "seen q1", "seen q2"]
    assert runtime_tools.STATE["most"] == 3  # three calls were inside the tool at once
    threads = runtime_tools.STATE["threads"]
    assert len(threads) == 3 and loop_thread not in threads  # worker threads, never the event loop's

    # No more than teacher.concurrency calls at once: with a limit of 2, six calls never overlap more than 2.
    config = make_config(tools=[_tool("Overlap", "overlap")], teacher={"provider": "offline", "concurrency": 2})
    box = ToolBox(config)
    runtime_tools.STATE.update(active=0, most=0, threads=set(), barrier=threading.Barrier(2, timeout=20))

    async def six() -> list[Any]:
        return await asyncio.gather(*(box.arun("Overlap", f"q{i}") for i in range(6)))

    assert all(not o.error for o in asyncio.run(six()))
    assert runtime_tools.STATE["most"] == 2
    assert box.counts["Overlap"] == {"calls": 6, "errors": 0}


def test_timeout_none_and_bad_returns_are_error_observations(make_config) -> None:
    runtime_tools.STATE.update(barrier=threading.Barrier(3, timeout=60))  # overlap waits for partners: stuck
    config = make_config(tools=[
        _tool("Stuck", "overlap", timeout_s=0.2), _tool("Nothing", "nothing"), _tool("Thing", "thing"),
        _tool("Numbers", "numbers"), _tool("Broken", "broken"),
    ])
    box = ToolBox(config)
    stuck = asyncio.run(box.arun("Stuck", "q"))
    assert stuck.error and stuck.text == "Error: TimeoutError: Stuck did not answer within 0.2 s"
    assert box.run("Stuck", "q").text == stuck.text  # the synchronous twin too
    runtime_tools.STATE["barrier"].abort()  # release the abandoned threads
    nothing = box.run("Nothing", "q")
    assert nothing.error and "returned None" in nothing.text
    thing = box.run("Thing", "q")
    assert thing.error and "returned a _Thing object" in thing.text
    numbers = box.run("Numbers", "q")
    assert not numbers.error and numbers.text == "[1, 2, 3]"  # LangChain's print of a JSON value
    broken = asyncio.run(box.arun("Broken", "q"))
    assert broken.error and broken.text == "Error: RuntimeError: the calculator is unplugged"
    assert box.counts["Nothing"] == {"calls": 1, "errors": 1} and box.counts["Stuck"] == {"calls": 2, "errors": 2}


def _failing_run(make_config, tmp_path: Path, reject: bool) -> tuple[Path, dict[str, Any]]:
    examples = [{"question": "What is 17 times 23?", "input": "17 * 23"},
                {"question": "What is 4 times 5?", "input": "4 * 5"}]
    config = make_config(
        tools=[{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"},
               _tool("Calc", "broken", examples=examples), _tool("Empty", "nothing", examples=examples[::-1])],
        generation={"conversations": 30, "seed": 1, "reject_tool_errors": reject,
                    "mix": {"tool": 0.8, "direct": 0.1, "multi_turn": 0.1}},
    )
    out = tmp_path / ("rejecting" if reject else "keeping")
    generate(config, out, progress=False)
    return out, json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_manifest_counts_calls_and_errors_per_tool_and_warns(make_config, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        out, manifest = _failing_run(make_config, tmp_path, reject=False)
    steps = [s for t in load_trajectories(out) for turn in t.turns for s in turn.steps if not s.is_final]
    tools = manifest["tools"]
    for name in ("Calc", "Empty", "Vector Search Tool"):
        mine = [s for s in steps if s.action == name]
        assert tools[name]["calls"] == len(mine) and tools[name]["errors"] == sum(s.tool_error for s in mine)
    assert tools["Calc"]["calls"] > 0 and tools["Calc"]["error_rate"] == 1.0 and tools["Empty"]["error_rate"] == 1.0
    assert tools["Vector Search Tool"]["errors"] == 0
    warned = [r.getMessage() for r in caplog.records if "errored in" in r.getMessage()]
    assert any("'Calc'" in w for w in warned) and any("'Empty'" in w for w in warned)
    assert not any("Vector Search Tool" in w for w in warned)
    # Without the switch, conversations that only tell of the failure are accepted (the complaint) ...
    assert any(s.tool_error for t in load_trajectories(out) if t.outcome == "accepted"
               for turn in t.turns for s in turn.steps)


def test_reject_tool_errors_keeps_failed_calls_out_of_the_data(make_config, tmp_path: Path) -> None:
    out, manifest = _failing_run(make_config, tmp_path, reject=True)
    errored = {t.id for t in load_trajectories(out) for turn in t.turns for s in turn.steps if s.tool_error}
    rows = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    rejected = {r["id"] for r in rows if r["reason"] == "tool_error"}
    assert errored and rejected == errored and all(r["stage"] == "export" for r in rows if r["id"] in rejected)
    assert manifest["rejects_by_reason"]["tool_error"] == len(rejected)
    assert manifest["examples"]["train"] > 0
    train = (out / "train.jsonl").read_text(encoding="utf-8")
    assert "I tried to use" not in train and "returned None" not in train


def test_ctrl_c_with_a_tool_that_never_returns(tmp_path: Path) -> None:
    data = {**BASE_CONFIG, "tools": [_tool("Forever", "forever", timeout_s=3600,
                                           examples=[{"question": "Run it.", "input": "go"}])],
            "generation": {"conversations": 4, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    marker = tmp_path / "entered"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "generate", str(path), "--no-progress",
                             "--out", str(tmp_path / "run")], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if marker.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert marker.exists(), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)  # one Ctrl-C
        _, err = proc.communicate(timeout=120)  # returns: the stuck worker thread is abandoned, not joined
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Task exception was never retrieved" not in err and "Traceback" not in err


class EchoTool(ToolSpec):
    """A third party's tool kind: it echoes its input with a prefix."""

    kind: Literal["test_echo"]
    prefix: str = "echo: "


def test_a_registered_third_party_kind_passes_config_validation_and_runs(make_config) -> None:
    data = {**BASE_CONFIG, "tools": [{"name": "Echo", "description": "Echoes.", "kind": "test_echo", "prefix": ">"}]}
    if "test_echo" not in tool_kinds():
        with pytest.raises(ConfigError, match="unknown tool kind; use one of: retriever, python, simulated, mcp"):
            config_from_dict(data)
    register_tool_model("test_echo", EchoTool)

    @register_tool_kind("test_echo")
    def _echo(tool: EchoTool, ctx: Any) -> Any:
        return lambda text: tool.prefix + text

    config = config_from_dict(data)
    assert isinstance(config.tools[0], EchoTool) and config.tools[0].prefix == ">"
    with pytest.raises(ConfigError) as exc:  # and its own keys are checked like a built-in's
        config_from_dict({**data, "tools": [{**data["tools"][0], "prefx": "?"}]})
    assert exc.value.key == "tools[0].prefx"
    assert ToolBox(config).run("Echo", "hi").text == ">hi"
    with pytest.raises(TypeError, match="subclass ToolEntry"):
        register_tool_model("other", dict)  # type: ignore[arg-type]
