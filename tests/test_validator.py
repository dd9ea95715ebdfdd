"""The strict action validator: one test per reject reason, and every leniency of LangChain's runtime parser."""

from __future__ import annotations

import json

import pytest
from langchain_classic.agents.conversational_chat.output_parser import ConvoOutputParser
from langchain_core.agents import AgentAction, AgentFinish

from distill.formats.langchain_actions import ToolSpec, check_action, render_action
from distill.trajectory import FINAL_ANSWER, Reason

FENCE = "```"
TOOLS = {
    "Search": ToolSpec("Search"),
    "Ticket Lookup": ToolSpec("Ticket Lookup", {"type": "string", "pattern": r"^TCK-\d{4}$"}),
}


def blob(body: str, lang: str = "json") -> str:
    return f"{FENCE}{lang}\n{body}\n{FENCE}"


def reason_of(text: str | None, tools=TOOLS, **kwargs) -> Reason | None:
    verdict = check_action(text, tools, **kwargs)
    assert verdict.ok == (verdict.reason is None)
    return verdict.reason


def parse(text: str) -> AgentAction | AgentFinish:
    return ConvoOutputParser().parse(text)


# -- one test per reason ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   \n", "The answer is 42."])
def test_no_json_block(text):
    assert reason_of(text) is Reason.NO_JSON_BLOCK


def test_multiple_blocks():
    text = render_action("Search", "a") + "\n" + render_action("Search", "b")
    assert reason_of(text) is Reason.MULTIPLE_BLOCKS


def test_unclosed_block():
    assert reason_of(f'{FENCE}json\n{{"action": "Search", "action_input": "x"}}') is Reason.UNCLOSED_BLOCK


def test_stray_fence_outside_the_block_is_unclosed():
    assert reason_of(render_action("Search", "x") + f"\n{FENCE}") is Reason.UNCLOSED_BLOCK


@pytest.mark.parametrize("lang", ["", "python", "JSON "])
def test_fence_not_json(lang):
    assert reason_of(blob('{"action": "Search", "action_input": "x"}', lang)) is Reason.FENCE_NOT_JSON


@pytest.mark.parametrize("before, after", [("Sure!\n", ""), ("", "\nHope this helps."), ("Ok: ", " done")])
def test_text_outside_block(before, after):
    assert reason_of(before + render_action("Search", "x") + after) is Reason.TEXT_OUTSIDE_BLOCK


@pytest.mark.parametrize(
    "body", ['{"action": "Search", "action_input": "x",}', "{'action': 'Search', 'action_input': 'x'}", "{"]
)
def test_invalid_json(body):
    assert reason_of(blob(body)) is Reason.INVALID_JSON


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"action": "Search", "action": "Other", "action_input": "x"}', id="duplicate-key"),
        '{"action": "Search", "action_input": "x", "thought": "t"}',  # extra key
        '{"action": "Search"}',  # missing key
        '["Search", "x"]',  # not an object
        '"Search"',
    ],
)
def test_bad_keys(body):
    assert reason_of(blob(body)) is Reason.BAD_KEYS


def test_duplicate_keys_are_rejected():
    verdict = check_action(blob('{"action": "Search", "action": "Other", "action_input": "x"}'), TOOLS)
    assert not verdict.ok and "duplicate key" in verdict.detail


@pytest.mark.parametrize("action", ["Web Search", "search", "final answer", 3])
def test_unknown_action(action):
    assert reason_of(blob(json.dumps({"action": action, "action_input": "x"}))) is Reason.UNKNOWN_ACTION


def test_unknown_tools_accept_any_tool_name():
    assert check_action(render_action("Web Search", "x"), None).ok


@pytest.mark.parametrize("value", [{"q": "x"}, ["x"], 3, None])
def test_action_input_not_string(value):
    assert reason_of(blob(json.dumps({"action": "Search", "action_input": value}))) is Reason.ACTION_INPUT_NOT_STRING


def test_action_input_schema_pattern():
    assert check_action(render_action("Ticket Lookup", "TCK-0042"), TOOLS).ok
    verdict = check_action(render_action("Ticket Lookup", "ticket 42"), TOOLS)
    assert verdict.reason is Reason.ACTION_INPUT_SCHEMA
    assert "Ticket Lookup" in verdict.detail


@pytest.mark.parametrize("answer", ["", "   ", "\n"])
def test_empty_answer(answer):
    assert reason_of(render_action(FINAL_ANSWER, answer)) is Reason.EMPTY_ANSWER


def test_truncated_by_finish_reason_even_if_the_text_is_fine():
    assert reason_of(render_action(FINAL_ANSWER, "42"), finish_reason="length") is Reason.TRUNCATED


def test_content_filter():
    assert reason_of(render_action(FINAL_ANSWER, "42"), finish_reason="content_filter") is Reason.CONTENT_FILTER


def test_finish_reason_stop_is_fine():
    assert check_action(render_action(FINAL_ANSWER, "42"), TOOLS, finish_reason="stop").ok


# -- what LangChain's lenient parser lets through, and the strict verdict --------------------------------------------

TRUNCATED = '{"action": "Final Answer", "action_input": "The answer is'
LENIENT = {
    "truncated blob in a closed fence": (blob(TRUNCATED), Reason.INVALID_JSON),
    "truncated blob, fence never closed": (f"{FENCE}json\n{TRUNCATED}", Reason.UNCLOSED_BLOCK),
    "wrong tool name": (render_action("Web Search", "x"), Reason.UNKNOWN_ACTION),
    "prose before the fence": ("Let me search.\n" + render_action("Search", "x"), Reason.TEXT_OUTSIDE_BLOCK),
    "prose after the fence": (render_action("Search", "x") + "\nI hope this helps!", Reason.TEXT_OUTSIDE_BLOCK),
    "two blobs": (render_action("Search", "a") + "\n" + render_action("Search", "b"), Reason.MULTIPLE_BLOCKS),
    "fence without json": (blob('{"action": "Search", "action_input": "x"}', ""), Reason.FENCE_NOT_JSON),
    "lowercase final answer": (render_action("final answer", "42"), Reason.UNKNOWN_ACTION),
    "object action_input": (
        blob(json.dumps({"action": "Search", "action_input": {"query": "x"}})),
        Reason.ACTION_INPUT_NOT_STRING,
    ),
    "extra key": (blob('{"action": "Search", "action_input": "x", "thought": "hmm"}'), Reason.BAD_KEYS),
}


@pytest.mark.parametrize("case", list(LENIENT))
def test_langchain_accepts_what_the_strict_check_rejects(case):
    text, reason = LENIENT[case]
    parsed = parse(text)  # no OutputParserException: the runtime would run with this
    assert isinstance(parsed, AgentAction | AgentFinish)
    verdict = check_action(text, TOOLS)
    assert not verdict.ok
    assert verdict.reason is reason, verdict.detail


def test_langchain_takes_the_last_of_duplicate_keys_the_strict_check_rejects():
    text = blob('{"action": "Search", "action": "Web Search", "action_input": "x"}')
    parsed = parse(text)
    assert isinstance(parsed, AgentAction) and parsed.tool == "Web Search"
    verdict = check_action(text, TOOLS)
    assert not verdict.ok and "duplicate key" in verdict.detail


def test_langchain_repairs_the_truncated_blob_into_a_final_answer():
    parsed = parse(blob(TRUNCATED))
    assert isinstance(parsed, AgentFinish)
    assert parsed.return_values == {"output": "The answer is"}


def test_langchain_treats_lowercase_final_answer_as_a_tool_call():
    parsed = parse(render_action("final answer", "42"))
    assert isinstance(parsed, AgentAction) and parsed.tool == "final answer"
    assert "spelled exactly 'Final Answer'" in check_action(render_action("final answer", "42"), TOOLS).detail


def test_langchain_takes_the_first_of_two_blobs():
    parsed = parse(LENIENT["two blobs"][0])
    assert isinstance(parsed, AgentAction) and parsed.tool_input == "a"


def test_langchain_passes_an_object_action_input_through():
    parsed = parse(LENIENT["object action_input"][0])
    assert isinstance(parsed, AgentAction) and parsed.tool_input == {"query": "x"}


# -- the canonical blob ---------------------------------------------------------------------------------------------


def test_render_action_layout_matches_the_seed():
    expected = FENCE + "json\n" + json.dumps({"action": "Search", "action_input": "x"}, indent=4) + "\n" + FENCE
    assert render_action("Search", "x") == expected


@pytest.mark.parametrize(
    "action, action_input",
    [
        ("Search", "main focus of IDSIA-01-11"),
        ("Ticket Lookup", "TCK-0042"),
        (FINAL_ANSWER, 'It says "fast" GPU CNNs.\nSee ünïcode, {braces} \\ too.'),
        pytest.param(FINAL_ANSWER, "Run:\n```python\nprint(1)\n```", id="answer-with-a-code-fence"),
    ],
)
def test_render_action_passes_and_parses_identically(action, action_input):
    text = render_action(action, action_input)
    verdict = check_action(text, TOOLS)
    assert verdict.ok, verdict.detail
    assert (verdict.action.action, verdict.action.action_input) == (action, action_input)
    parsed = parse(text)
    if action == FINAL_ANSWER:
        assert isinstance(parsed, AgentFinish) and parsed.return_values == {"output": action_input}
        assert verdict.action.is_final
    else:
        assert isinstance(parsed, AgentAction)
        assert (parsed.tool, parsed.tool_input) == (action, action_input)
        assert parsed.log == text


@pytest.mark.parametrize(
    "pair",
    [("Final Answer", "plain"), ("Vector Search Tool", 'quotes " and \\ backslash'), ("Final Answer", "ünï\ncodé\t✓"),
     ("X", ""), ("Final Answer", "</script> \u2028 \x00")],
)
def test_render_action_is_json_dumps_indent_4(pair: tuple[str, str]) -> None:
    import json

    action, action_input = pair
    expected = json.dumps({"action": action, "action_input": action_input}, indent=4, ensure_ascii=False)
    assert render_action(action, action_input) == f"```json\n{expected}\n```"
