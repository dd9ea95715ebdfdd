"""`kind: mcp`: a real MCP server (tests/servers/mcp_shop.py, written with the SDK) over stdio and streamable HTTP.

The server logs every call it serves, so the tests count calls at the server and compare what it returned with
what the run recorded; it also has an erroring tool, a slow one and one that kills it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from distill.agent.tools import ToolBox
from distill.errors import ConfigError, RunStopped
from distill.generation.index import ChunkIndex
from distill.generation.pipeline import generate, load_trajectories
from tests.conftest import REPO
from tests.test_parity import replay_and_compare

SHOP = REPO / "tests" / "servers" / "mcp_shop.py"
EXAMPLES = {
    "find_item": [
        {"question": "Is SKU-1234 in stock in red?", "input": {"sku": "SKU-1234", "color": "red"}},
        {"question": "Do you have SKU-987 in size 42?", "input": {"sku": "SKU-987", "size": 42}},
    ],
    "search_items": [{"question": "Which items are waterproof hiking boots?", "input": {"query": "hiking boots",
                                                                                       "tags": ["waterproof"]}}],
}


def _calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def _stdio(log: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "mcp", "server": {"command": ["python", str(SHOP)], "env": {"CALL_LOG": str(log), **extra}}}


def _config(make_config, entry: dict[str, Any], **overrides: Any) -> Any:
    tools = [{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"}, entry]
    return make_config(tools=tools, **overrides)


def test_listed_tools_keep_their_nullable_anyof_and_enum_schemas(make_config, tmp_path: Path) -> None:
    config = _config(make_config, {**_stdio(tmp_path / "calls.jsonl"), "include": ["find_item", "search_items"]})
    names = [t.name for t in config.tools]
    assert names == ["Vector Search Tool", "find_item", "search_items"]
    find = config.tool_named("find_item")
    assert find.kind == "mcp_tool" and find.structured and find.description.startswith("Find an item by its SKU")
    color = find.input_schema["properties"]["color"]
    assert {"enum": ["red", "green", "blue"], "type": "string"} in color["anyOf"]
    assert {"type": "null"} in color["anyOf"]
    assert find.input_schema["required"] == ["sku"]
    # The listed schemas are part of the dumped config (the manifest, the run's fingerprint).
    dumped = config.model_dump(mode="json")["tools"][1]
    assert dumped["input_schema"] == find.input_schema and dumped["server"]["command"][1] == str(SHOP)


def test_offline_run_calls_the_server_with_the_teachers_arguments(make_config, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    entry = {**_stdio(log), "include": ["find_item", "search_items"], "examples": EXAMPLES}
    config = _config(make_config, entry, generation={"conversations": 30, "seed": 2,
                                                      "mix": {"tool": 0.8, "direct": 0.1, "multi_turn": 0.1}})
    out = tmp_path / "run"
    generate(config, out, progress=False)
    steps = [s for t in load_trajectories(out) for turn in t.turns for s in turn.steps
             if s.action in ("find_item", "search_items")]
    assert len(steps) >= 5
    served = [c for c in _calls(log) if c["tool"] in ("find_item", "search_items")]
    assert len(served) == len(steps)  # every call the record holds was made, once
    for step, call in zip(steps, served, strict=True):  # rollouts run one by one here: same order
        assert step.action == call["tool"]
        sent = json.loads(step.action_input)
        assert all(call["arguments"][k] == v for k, v in sent.items())
        assert step.observation == call["text"] and not step.tool_error
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tools"]["find_item"]["calls"] == sum(s.action == "find_item" for s in steps)
    assert manifest["config"]["tools"][1]["kind"] == "mcp_tool"


@pytest.fixture
def http_shop(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "http-calls.jsonl"
    proc = subprocess.Popen([sys.executable, str(SHOP), "--http", str(port)], env={"CALL_LOG": str(log),
                            "PATH": "/usr/bin:/bin"}, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp", log
    proc.terminate()
    proc.wait(10)


def test_streamable_http_server(make_config, http_shop) -> None:
    url, log = http_shop
    config = _config(make_config, {"kind": "mcp", "server": {"url": url}, "include": ["find_item", "fail"],
                                   "timeout_s": 5})
    assert [t.name for t in config.tools][1:] == ["find_item", "fail"]
    box = ToolBox(config, object())
    try:
        ok = asyncio.run(box.arun("find_item", json.dumps({"sku": "SKU-12", "color": "blue"})))
        bad = box.run("fail", json.dumps({"reason": "holiday"}))
    finally:
        box.close()
    served = _calls(log)
    assert [c["tool"] for c in served] == ["find_item", "fail"]
    assert served[0]["arguments"] == {"sku": "SKU-12", "color": "blue", "size": None}
    assert ok.text == served[0]["text"] and not ok.error
    assert bad.error and "the shop is closed: holiday" in bad.text  # an isError result: the server's text
    assert box.counts["fail"] == {"calls": 1, "errors": 1}


def test_slow_tool_past_its_timeout_is_an_error_and_the_session_lives_on(make_config, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    config = _config(make_config, {**_stdio(log), "include": ["slow", "find_item"], "timeout_s": 0.5})
    box = ToolBox(config, object())
    try:
        late = asyncio.run(box.arun("slow", json.dumps({"seconds": 30})))
        after = box.run("find_item", json.dumps({"sku": "SKU-1"}))
    finally:
        box.close()
    assert late.error and late.text == "Error: TimeoutError: slow did not answer within 0.5 s"
    assert not after.error and json.loads(after.text)["sku"] == "SKU-1"


def test_a_dead_server_is_restarted_once_then_the_run_stops(make_config, tmp_path: Path) -> None:
    log, marker = tmp_path / "calls.jsonl", tmp_path / "dead"
    config = _config(make_config, {**_stdio(log, DEAD_MARKER=str(marker)), "include": ["die", "find_item"]})
    box = ToolBox(config, object())
    try:
        # It dies on the call; restarted, the call is made again (and kills it again): the run stops.
        with pytest.raises(RunStopped) as stopped:
            box.run("die", json.dumps({"code": 1}))
        assert f"MCP server `python {SHOP}` died" in stopped.value.message
        assert len({c["pid"] for c in _calls(log)}) == 2  # the first process, and the restarted one
    finally:
        box.close()
    box = ToolBox(config, object())
    try:
        async def calls() -> list[Any]:
            first = await box.arun("find_item", json.dumps({"sku": "SKU-1"}))
            marker.write_text("x")  # from now on the server cannot start
            with pytest.raises(RunStopped) as exc:
                await box.arun("die", json.dumps({}))
            return [first, exc.value]

        first, exc = asyncio.run(calls())
        assert not first.error and "restarting it failed" in exc.message and exc.reason == "tool_server_died"
    finally:
        box.close()


def test_a_server_dying_mid_run_is_restarted(make_config, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    config = _config(make_config, {**_stdio(log), "include": ["die", "find_item"]})
    box = ToolBox(config, object())
    try:
        before = box.run("find_item", json.dumps({"sku": "SKU-1"}))
        conn = box.function("find_item").connection  # type: ignore[attr-defined]
        conn.runtime.submit(conn.session.call_tool("die", {"code": 9})).exception(timeout=10)  # killed outside a call
        after = box.run("find_item", json.dumps({"sku": "SKU-22"}))
    finally:
        box.close()
    assert not before.error and not after.error and json.loads(after.text)["sku"] == "SKU-22"
    pids = [c["pid"] for c in _calls(log) if c["tool"] == "find_item"]
    assert len(pids) == 2 and pids[0] != pids[1]


def test_config_errors_name_the_server_and_the_clash(make_config, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    with pytest.raises(ConfigError) as exc:
        _config(make_config, {**_stdio(log), "include": ["find_item", "nope"]})
    assert exc.value.key == "tools[1]" and "has no tool 'nope'; it lists: find_item, search_items, fail" in str(exc.value)
    clash = {"name": "find_item", "description": "mine", "kind": "python", "function": "json:dumps"}
    with pytest.raises(ConfigError) as exc:
        make_config(tools=[clash, {**_stdio(log), "include": ["find_item"]}])
    assert "tool name 'find_item' of tools[1] ('find_item', listed by MCP server `python" in str(exc.value)
    assert "clashes with tools[0]" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        make_config(tools=[{"kind": "mcp", "server": {"command": ["python", str(tmp_path / "missing.py")]}}])
    assert "cannot list the tools of MCP server" in str(exc.value) and "\n" not in exc.value.message


def test_langchain_parity_replay_with_mcp_tools_in_the_loop(make_config, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    entry = {**_stdio(log), "include": ["find_item", "search_items"], "examples": EXAMPLES}
    config = make_config(
        tools=[{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever",
                "top_k": 2}, entry],
        agent={"format": "langchain-chat", "max_steps": 3, "memory_window": 1},
        generation={"conversations": 30, "seed": 3, "follow_ups": 2,
                    "mix": {"tool": 0.6, "direct": 0.1, "multi_turn": 0.3}},
    )
    out = tmp_path / "run"
    generate(config, out, progress=False)
    examples = [json.loads(line) for name in ("train", "validation")
                for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    trajectories = [t for t in load_trajectories(out) if t.outcome == "accepted"]
    mcp_steps = [s for t in trajectories for turn in t.turns for s in turn.steps if s.action in EXAMPLES]
    assert len(mcp_steps) >= 3
    served_before = len(_calls(log))
    box = ToolBox(config, ChunkIndex.load(out / "index"))
    try:
        assert replay_and_compare(config, box, trajectories, examples) > 20
    finally:
        box.close()
    assert len(_calls(log)) - served_before == len(mcp_steps)  # LangChain's runtime called the server again


def test_distill_chat_with_an_mcp_tool_calls_the_server(make_config, tmp_path: Path, fake_openai) -> None:
    from langchain_classic.agents.conversational_chat.prompt import TEMPLATE_TOOL_RESPONSE

    from distill.evaluation.chat import chat
    from distill.formats.langchain_actions import render_action

    log = tmp_path / "calls.jsonl"
    config = make_config(tools=[{**_stdio(log), "include": ["find_item"]}])

    def student(body: dict[str, Any]) -> str:
        if body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
            return render_action("Final Answer", "SKU-77 is there in green.")
        return render_action("find_item", json.dumps({"sku": "SKU-77", "color": "green"}))

    fake_openai.chat_script = student
    out = __import__("io").StringIO()
    code = chat(config, "student", question="Is SKU-77 there in green?", run=tmp_path / "no-run", out=out)
    assert code == 0, out.getvalue()
    served = _calls(log)
    assert [(c["tool"], c["arguments"]) for c in served] == [("find_item", {"sku": "SKU-77", "color": "green",
                                                                           "size": None})]
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    assert bodies[1]["messages"][-1]["content"] == TEMPLATE_TOOL_RESPONSE.format(observation=served[0]["text"])
    assert "> Final Answer: SKU-77 is there in green." in out.getvalue()
