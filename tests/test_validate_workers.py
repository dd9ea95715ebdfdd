"""`distill validate` on large files: worker processes and caches never change the report.

A file holding every kind of broken line (the lint tests' kinds, plus seeded random mutations of good lines in
both agent formats) is linted in one process and in several worker processes over many byte ranges: the printed
report, the problems (line numbers included) and the token counts must be identical. The caches of repeated parts
(tool lists, schema validators, action verdicts) are checked the same way: a line's verdict does not depend on
which lines came before it.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from distill.trajectory import FINAL_ANSWER
from distill.validation import chunks
from distill.validation.lint import format_report, lint_example, lint_file
from tests.test_lint import GOOD, SEARCH, TICKET, WEATHER, chat, langchain_example, make_config, tool_example

CALC = {
    "type": "function",
    "function": {
        "name": "calc",
        "description": "Arithmetic.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string", "pattern": "^[0-9+*/(). -]+$", "maxLength": 20}},
            "required": ["input"],
            "additionalProperties": False,
        },
    },
}


def _calc_line(expression: Any, **extra: Any) -> dict[str, Any]:
    args = json.dumps({"input": expression, **extra})
    call = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": args}}
    return {
        "messages": [
            {"role": "system", "content": "You compute."},
            {"role": "user", "content": "What is it?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "42."},
        ],
        "tools": [CALC, WEATHER],
        "parallel_tool_calls": False,
    }


def _kinds() -> list[Any]:
    """One line of every kind the lint tests check (dicts are dumped, str and bytes written as they are)."""
    lc_steps = [(SEARCH, "q", "['x']"), (TICKET, "TCK-1234", "open"), (FINAL_ANSWER, "Done.", None)]
    broken_tools = tool_example()
    broken_tools["messages"][1]["tool_calls"][0]["type"] = "code"
    return [
        GOOD,
        "",
        "   ",
        '{"messages": [',
        b"\xff\xfe not utf-8",
        "\ufeff" + json.dumps(GOOD),
        "NaN",
        "[1, 2]",
        "42",
        {"messages": []},
        {"messages": "no"},
        {"nope": 1},
        {**GOOD, "extra": True},
        chat(("user", "q"), ("robot", "a")),
        chat(("user", None), ("assistant", "a")),
        chat(("user", "q"), ("assistant", "")),
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
        chat(("user", "q"), ("assistant", "a"), ("assistant", "b")),
        {"messages": ["not a message", {"role": "assistant", "content": "a"}]},
        tool_example(),
        tool_example(answers=["c1"]),
        tool_example(answers=["c1", "c2", "c9"]),
        broken_tools,
        {**tool_example(), "tools": WEATHER},
        {**tool_example(), "parallel_tool_calls": "yes"},
        {**tool_example(), "tools": [{**WEATHER, "function": {**WEATHER["function"], "name": "bad name!"}}]},
        {**tool_example(), "tools": [WEATHER, WEATHER]},
        {**tool_example(), "tools": [CALC]},
        {k: v for k, v in tool_example().items() if k != "tools"},
        _calc_line("6 * 7"),
        _calc_line("6 * 7"),  # the same tool list and arguments again: cached verdicts must match
        _calc_line("rm -rf /"),
        _calc_line("1 + 2 + 3 + 4 + 5 + 6 + 7 + 8"),
        _calc_line(42),
        _calc_line("1", extra="x"),
        {**_calc_line("1"), "tools": [{**CALC, "function": {**CALC["function"], "parameters": {"type": 5}}}]},
        langchain_example(),
        langchain_example(),
        langchain_example(steps=[(FINAL_ANSWER, "Hi!", None)]),
        langchain_example(steps=lc_steps),
        langchain_example(steps=[(SEARCH, "q", "['x']"), ("Final answer", "x", None)]),
        langchain_example(steps=[("Nope", "q", "['x']"), (FINAL_ANSWER, "x", None)]),
        langchain_example(steps=[(TICKET, "TCK-12", "?"), (FINAL_ANSWER, "x", None)]),
        langchain_example(history=[("Earlier?", "plain text answer")]),
    ]


def _mutated(line: str, rng: random.Random) -> str:
    """A good line with a few characters deleted, doubled or swapped: often invalid JSON, sometimes a new problem."""
    chars = list(line)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(chars))
        what = rng.choice(["drop", "double", "swap", "quote"])
        if what == "drop":
            del chars[at]
        elif what == "double":
            chars.insert(at, chars[at])
        elif what == "swap" and at + 1 < len(chars):
            chars[at], chars[at + 1] = chars[at + 1], chars[at]
        else:
            chars.insert(at, '"')
    return "".join(chars)


def _file(tmp_path: Path, copies: int = 6) -> Path:
    rng = random.Random(15)
    kinds = _kinds()
    dumped = [json.dumps(k) if isinstance(k, dict | list) else k for k in kinds]
    good = [d for d in dumped if isinstance(d, str) and d.startswith("{")]
    path = tmp_path / "mixed.jsonl"
    with path.open("wb") as f:
        for _ in range(copies):
            order = dumped + [_mutated(rng.choice(good), rng) for _ in range(40)]
            rng.shuffle(order)
            for line in order:
                f.write((line.encode() if isinstance(line, str) else line) + b"\n")
        f.write(json.dumps(GOOD).encode())  # a last line without a newline
    return path


def _same(a: Any, b: Any) -> None:
    assert format_report(a, max_lines=10**6) == format_report(b, max_lines=10**6)
    assert a.problems == b.problems and a.token_counts == b.token_counts
    assert (a.lines, a.ok_lines) == (b.lines, b.ok_lines)


@pytest.mark.parametrize("with_config", [False, True])
def test_worker_processes_give_the_same_report_as_one_process(tmp_path, with_config):
    path = _file(tmp_path)
    config = make_config(tmp_path) if with_config else None
    one = lint_file(path, config, workers=1)
    assert len({p.reason for p in one.problems}) >= 20  # the file really holds every kind of broken line
    assert one.lines > 400 and 0 < one.ok_lines < one.lines
    for workers in (2, 3):
        _same(lint_file(path, config, workers=workers), one)


def test_a_lines_verdict_does_not_depend_on_the_lines_before_it(tmp_path):
    """Each line linted alone in a fresh file (cold caches for its texts) finds what the whole file found for it."""
    path = _file(tmp_path, copies=1)
    whole = lint_file(path, workers=1)
    raw_lines = path.read_bytes().split(b"\n")
    for number in sorted({p.line for p in whole.problems})[::3]:
        alone = tmp_path / "alone.jsonl"
        alone.write_bytes(raw_lines[number - 1] + b"\n")
        expected = [(p.reason, p.detail, p.message) for p in whole.problems if p.line == number]
        assert [(p.reason, p.detail, p.message) for p in lint_file(alone).problems] == expected


def test_cached_tool_list_verdicts_match_a_fresh_check():
    """The same tool list and arguments linted twice, and after other lists, give the first answer again."""
    settings: dict[str, Any] = {"tools": None, "max_steps": None, "model": "gpt-4o-mini", "token_limit": None}
    lines = [_calc_line("6 * 7"), _calc_line("x"), _calc_line(7), tool_example()]
    first = [lint_example(line, **settings) for line in lines]
    again = [lint_example(line, **settings) for line in reversed(lines)][::-1]
    assert first == again
    assert [p.reason for p in first[1]] == ["arguments_schema"] and first[0] == []


def test_a_byte_order_mark_is_refused_as_json_loads_refuses_it(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(("\ufeff" + json.dumps(GOOD) + "\n").encode())
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(path.read_text(encoding="utf-8"))
    (problem,) = lint_file(path).problems
    assert (problem.reason, problem.detail) == ("invalid_json_line", f"not valid JSON: {expected.value}")


def test_ranges_cover_the_file_and_start_at_line_starts(tmp_path):
    path = _file(tmp_path, copies=2)
    data = path.read_bytes()
    for n in (1, 2, 5, 64, 10_000):
        parts = chunks.ranges(path, n)
        assert parts[0][0] == 0 and parts[-1][1] == len(data)
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(parts))
        assert all(start == 0 or data[start - 1 : start] == b"\n" for start, _ in parts)
        assert len(parts) <= max(1, n)


def test_small_files_stay_in_one_process_and_large_ones_use_the_cores(tmp_path, monkeypatch):
    path = _file(tmp_path, copies=1)
    assert chunks.auto_workers(path) == 1
    monkeypatch.setattr(chunks, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(chunks, "_cores", lambda: 2)
    assert chunks.auto_workers(path) == 2


def test_cli_workers_flag_prints_the_same_report(tmp_path, capsys):
    path = _file(tmp_path, copies=2)
    assert main(["validate", str(path), "--workers", "1", "--max-lines", "100000"]) == 1
    one = capsys.readouterr().out
    assert main(["validate", str(path), "--workers", "2", "--max-lines", "100000"]) == 1
    assert capsys.readouterr().out == one and "invalid_json_line" in one


SCHEMAS: list[Any] = [
    CALC["function"]["parameters"],
    {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": ["number", "null"]}}, "required": ["n"]},
    {"type": "object", "properties": {"s": {"type": "string", "minLength": 2}}, "additionalProperties": True},
    {"type": "object", "properties": {"b": {"type": "boolean"}, "a": {"type": "array"}}},
    {"type": "object", "properties": {"e": {"enum": ["a", "b"]}}},  # enum: not compiled, jsonschema answers
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "properties": {"n": {"type": "integer"}}},
    {"type": "string", "pattern": r"^TCK-\d{4}$"},
]
VALUES: list[Any] = [
    {}, {"input": "6 * 7"}, {"input": "x"}, {"input": 7}, {"input": "1", "more": 1}, {"n": 1}, {"n": 1.0},
    {"n": True}, {"n": "1"}, {"n": 2, "x": None}, {"n": 2, "x": 1.5}, {"n": 2, "x": "no"}, {"s": "a"}, {"s": "ab"},
    {"s": 5}, {"b": 1}, {"b": False, "a": []}, {"a": {}}, {"e": "a"}, {"e": "c"}, "TCK-1234", "TCK-12", 5, None, [],
    {"input": "1" * 21}, {"input": "1" * 20},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_compiled_schema_checks_answer_as_jsonschema_does(schema):
    from distill.formats.schema_checks import checker
    from distill.schema import schema_problem

    check = checker(schema)
    assert [check(v) for v in VALUES] == [schema_problem(schema, v) for v in VALUES]
    assert any(check(v) is None for v in VALUES) and any(check(v) for v in VALUES)


def test_cached_action_verdicts_follow_the_tools_they_were_given():
    from distill.formats.langchain_actions import ToolSpec, check_action, check_action_cached, render_action

    text = render_action(TICKET, "TCK-12")
    strict = {TICKET: ToolSpec(TICKET, {"type": "string", "pattern": r"^TCK-\d{4}$"})}
    loose = {TICKET: ToolSpec(TICKET)}
    for tools in (strict, loose, None, strict, {}):
        assert check_action_cached(text, tools) == check_action(text, tools)
    assert not check_action_cached(text, strict).ok and check_action_cached(text, loose).ok
