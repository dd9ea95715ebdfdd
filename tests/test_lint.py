"""`distill validate`'s engine: one test per lint rule, with line numbers, on small JSONL files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.agents import ConversationalChatAgent
from langchain_classic.agents.conversational_chat.prompt import TEMPLATE_TOOL_RESPONSE
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import Tool

from distill.config import Config, config_from_dict
from distill.errors import DistillError
from distill.formats.langchain_actions import render_action
from distill.tokens import count_example
from distill.trajectory import FINAL_ANSWER
from distill.validation.lint import DEFAULT_MODEL, LintReport, Problem, format_report, lint_example, lint_file

SEARCH = "Vector Search Tool"
TICKET = "Ticket Lookup"


# -- helpers ----------------------------------------------------------------------------------------------------------


def write(tmp_path: Path, *lines: Any, name: str = "train.jsonl") -> Path:
    """Each line: a dict (dumped as JSON), a str (written as is) or bytes."""
    path = tmp_path / name
    with path.open("wb") as f:
        for line in lines:
            if isinstance(line, dict | list):
                line = json.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    (tmp_path / "docs").mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "name": "lint-test",
        "tools": [
            {"kind": "retriever", "name": SEARCH, "description": "Finds research about LLMs."},
            {
                "kind": "python",
                "name": TICKET,
                "description": "Looks up a support ticket by its id.",
                "function": "json:dumps",
                "input_schema": {"type": "string", "pattern": r"^TCK-\d{4}$"},
            },
        ],
        "sources": [{"path": "docs"}],
    }
    data.update(overrides)
    return config_from_dict(data, file="cfg.yaml", base_dir=tmp_path)


def _noop(_: str) -> str:
    return ""


def langchain_example(
    question: str = "What is the focus of IDSIA-01-11?",
    steps: list[tuple[str, str, str | None]] | None = None,
    history: list[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A runtime-faithful line, built with langchain-classic's own prompt: history at weight 0, every step trained."""
    if steps is None:
        steps = [(SEARCH, "focus of IDSIA-01-11", "['fast GPU CNNs']"), (FINAL_ANSWER, "Fast GPU CNNs.", None)]
    tools = [
        Tool(name=SEARCH, description="Finds research about LLMs.", func=_noop),
        Tool(name=TICKET, description="Looks up a support ticket by its id.", func=_noop),
    ]
    chat_history = [m for q, a in history for m in (HumanMessage(content=q), AIMessage(content=a))]
    scratchpad = []
    for action, action_input, observation in steps[:-1]:
        scratchpad.append(AIMessage(content=render_action(action, action_input)))
        scratchpad.append(HumanMessage(content=TEMPLATE_TOOL_RESPONSE.format(observation=observation)))
    prompt = ConversationalChatAgent.create_prompt(tools)
    lc = prompt.format_messages(input=question, chat_history=chat_history, agent_scratchpad=scratchpad)
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    messages = [{"role": roles[m.type], "content": m.content} for m in lc]
    for message in messages[1 : 1 + 2 * len(history)]:
        if message["role"] == "assistant":
            message["weight"] = 0
    messages.append({"role": "assistant", "content": render_action(*steps[-1][:2])})
    return {"messages": messages}


def chat(*pairs: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in pairs], **extra}


GOOD = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"))


def found(report: LintReport) -> list[tuple[int, str, int | None]]:
    return [(p.line, p.reason, p.message) for p in report.problems]


def lint_one(tmp_path: Path, example: Any, config: Config | None = None) -> list[tuple[int, str, int | None]]:
    """Lint a file whose second line is `example` (the first is a clean line) and return its problems."""
    return found(lint_file(write(tmp_path, GOOD, example), config))


# -- the file: lines, blank lines, JSON -------------------------------------------------------------------------------


def test_clean_plain_chat_file(tmp_path):
    report = lint_file(write(tmp_path, GOOD, GOOD))
    assert report.ok and report.lines == 2 and report.ok_lines == 2
    assert report.token_counts == [count_example(GOOD, DEFAULT_MODEL)] * 2


def test_invalid_json_line_counts_physical_lines_and_skips_blank_ones(tmp_path):
    report = lint_file(write(tmp_path, GOOD, "", "   ", '{"messages": [', GOOD))
    assert found(report) == [(4, "invalid_json_line", None)]
    assert report.lines == 3 and report.ok_lines == 2 and not report.ok


@pytest.mark.parametrize("raw", [b'{"messages": "\xff\xfe"}', b"NaN", b'{"messages": [], "x": Infinity}'])
def test_undecodable_or_non_json_bytes(tmp_path, raw):
    assert lint_one(tmp_path, raw) == [(2, "invalid_json_line", None)]


@pytest.mark.parametrize("line", [[GOOD], "42", '"text"', "null"])
def test_data_type(tmp_path, line):
    assert lint_one(tmp_path, line) == [(2, "data_type", None)]


def test_message_that_is_not_an_object(tmp_path):
    example = {"messages": [{"role": "user", "content": "q"}, "hello", {"role": "assistant", "content": "a"}]}
    assert lint_one(tmp_path, example) == [(2, "data_type", 1)]


@pytest.mark.parametrize("example", [{"prompt": "q", "completion": "a"}, {"messages": []}, {"messages": "hi"}])
def test_missing_messages_list(tmp_path, example):
    assert lint_one(tmp_path, example) == [(2, "missing_messages_list", None)]


def test_unrecognized_top_level_key(tmp_path):
    assert lint_one(tmp_path, {**GOOD, "metadata": {}}) == [(2, "unrecognized_top_level_key", None)]


# -- messages ---------------------------------------------------------------------------------------------------------


def test_message_missing_key(tmp_path):
    example = {"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}
    assert lint_one(tmp_path, example) == [(2, "message_missing_key", 0)]


def test_message_unrecognized_key(tmp_path):
    example = chat(("user", "q"), ("assistant", "a"))
    example["messages"][1]["thought"] = "hmm"
    assert lint_one(tmp_path, example) == [(2, "message_unrecognized_key", 1)]


@pytest.mark.parametrize("role", ["function", "bot", "developer", None])
def test_unrecognized_role(tmp_path, role):
    assert lint_one(tmp_path, chat(("user", "q"), (role, "x"), ("assistant", "a"))) == [(2, "unrecognized_role", 1)]


@pytest.mark.parametrize("content", [None, 42, "", "  "])
def test_missing_content(tmp_path, content):
    assert lint_one(tmp_path, chat(("user", content), ("assistant", "a"))) == [(2, "missing_content", 0)]


def test_missing_content_key(tmp_path):
    example = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}
    assert lint_one(tmp_path, example) == [(2, "missing_content", 1)]


def test_user_content_parts_are_allowed(tmp_path):
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    assert lint_one(tmp_path, chat(("user", parts), ("assistant", "A cat."))) == []


@pytest.mark.parametrize(
    "where, weight", [(1, 2), (1, 0.5), (1, True), (1, "1"), (0, 1)]  # index 0 is the user message
)
def test_bad_weight(tmp_path, where, weight):
    example = chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))
    example["messages"][where]["weight"] = weight
    assert lint_one(tmp_path, example) == [(2, "bad_weight", where)]


def test_weights_0_and_1_are_fine(tmp_path):
    example = chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))
    example["messages"][1]["weight"], example["messages"][3]["weight"] = 0, 1
    assert lint_one(tmp_path, example) == []


@pytest.mark.parametrize("last", [("user", "anyone?"), ("system", "Be brief.")])
def test_example_missing_assistant_message(tmp_path, last):
    assert lint_one(tmp_path, chat(("user", "q"), last)) == [(2, "example_missing_assistant_message", None)]


def test_only_weight_0_assistants_is_missing_an_assistant_message(tmp_path):
    example = chat(("user", "q"), ("assistant", "a"))
    example["messages"][1]["weight"] = 0
    assert lint_one(tmp_path, example) == [(2, "example_missing_assistant_message", None)]


def test_consecutive_assistant_messages(tmp_path):
    example = chat(("user", "q"), ("assistant", "a"), ("assistant", "b"))
    assert lint_one(tmp_path, example) == [(2, "consecutive_assistant_messages", 2)]


# -- tools and tool calls ---------------------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}},
}


def call(call_id: str, city: str = "Paris") -> dict[str, Any]:
    args = json.dumps({"city": city})
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": args}}


def tool_example(answers: list[str] = ("c1", "c2"), calls: list[str] = ("c1", "c2")) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call(c) for c in calls]},
    ]
    messages += [{"role": "tool", "tool_call_id": c, "content": "sunny"} for c in answers]
    messages.append({"role": "assistant", "content": "Sunny in both."})
    return {"messages": messages, "tools": [WEATHER], "parallel_tool_calls": True}


def test_tool_calls_answered_pass(tmp_path):
    assert lint_one(tmp_path, tool_example()) == []


def test_tool_call_id_unanswered(tmp_path):
    assert lint_one(tmp_path, tool_example(answers=["c1"])) == [(2, "tool_call_id_unanswered", 1)]


def test_tool_call_never_answered_at_the_end(tmp_path):
    example = tool_example(answers=[], calls=["c1"])
    example["messages"].pop()  # no final assistant either: the call is the last message
    assert lint_one(tmp_path, example) == [(2, "tool_call_id_unanswered", 1)]


def test_tool_call_id_unknown_and_answered_twice(tmp_path):
    assert lint_one(tmp_path, tool_example(answers=["c1", "c2", "c9"])) == [(2, "tool_call_id_unknown", 4)]
    assert lint_one(tmp_path, tool_example(answers=["c1", "c2", "c2"])) == [(2, "tool_call_id_unknown", 4)]


def test_tool_message_without_a_call(tmp_path):
    example = chat(("user", "q"), ("assistant", "a"))
    example["messages"].insert(1, {"role": "tool", "tool_call_id": "c1", "content": "x"})
    assert lint_one(tmp_path, example) == [(2, "tool_call_id_unknown", 1)]


def test_tool_message_without_tool_call_id(tmp_path):
    example = tool_example()
    del example["messages"][3]["tool_call_id"]
    problems = lint_one(tmp_path, example)
    assert (2, "message_missing_key", 3) in problems and (2, "tool_call_id_unanswered", 1) in problems


def test_consecutive_assistants_around_tool_calls(tmp_path):
    example = tool_example()
    example["messages"].append({"role": "assistant", "content": "Anything else?"})
    assert lint_one(tmp_path, example) == [(2, "consecutive_assistant_messages", 5)]


def test_bad_tool_calls(tmp_path):
    example = tool_example(answers=["c1"], calls=["c1"])
    example["messages"][1]["tool_calls"][0]["type"] = "code"
    problems = lint_one(tmp_path, example)
    assert problems[0] == (2, "bad_tool_calls", 1)


@pytest.mark.parametrize(
    "tools", [WEATHER, [{"name": "get_weather"}], [{"type": "function", "function": {"description": "no name"}}]]
)
def test_bad_tools(tmp_path, tools):
    assert lint_one(tmp_path, {**tool_example(), "tools": tools}) == [(2, "bad_tools", None)]


def test_bad_parallel_tool_calls(tmp_path):
    assert lint_one(tmp_path, {**tool_example(), "parallel_tool_calls": "yes"}) == [
        (2, "bad_parallel_tool_calls", None)
    ]


# -- LangChain conversational-chat examples ---------------------------------------------------------------------------


def test_clean_langchain_example_with_config(tmp_path):
    report = lint_file(write(tmp_path, langchain_example(), langchain_example(steps=[(FINAL_ANSWER, "Hi!", None)])),
                       make_config(tmp_path))
    assert report.ok, format_report(report)
    assert report.lines == report.ok_lines == 2


def test_clean_langchain_example_with_inferred_tools(tmp_path):
    steps = [(TICKET, "anything goes without a schema", "['open']"), (FINAL_ANSWER, "It is open.", None)]
    report = lint_file(write(tmp_path, langchain_example(), langchain_example(steps=steps)))
    assert report.ok, format_report(report)


def test_weight_0_plain_text_history_is_allowed(tmp_path):
    example = langchain_example(history=[("Hi there", "Hello! How can I help?"), ("Who are you?", "An assistant.")])
    assert example["messages"][2] == {"role": "assistant", "content": "Hello! How can I help?", "weight": 0}
    assert lint_one(tmp_path, example, make_config(tmp_path)) == []


def test_trained_plain_text_history_is_checked(tmp_path):
    example = langchain_example(history=[("Hi there", "Hello! How can I help?")])
    del example["messages"][2]["weight"]
    assert lint_one(tmp_path, example) == [(2, "no_json_block", 2)]


def test_unknown_action_with_config_and_inferred(tmp_path):
    example = langchain_example(steps=[("Web Search", "x", "['y']"), (FINAL_ANSWER, "y", None)])
    assert lint_one(tmp_path, example, make_config(tmp_path)) == [(2, "unknown_action", 2)]
    assert lint_one(tmp_path, example) == [(2, "unknown_action", 2)]


def test_action_input_schema_from_config(tmp_path):
    example = langchain_example(steps=[(TICKET, "ticket 42", "['open']"), (FINAL_ANSWER, "Open.", None)])
    assert lint_one(tmp_path, example, make_config(tmp_path)) == [(2, "action_input_schema", 2)]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Sure!\n" + render_action(FINAL_ANSWER, "x"), "text_outside_block"),
        ('```json\n{"action": "Final Answer", "action_input": "The answer is', "unclosed_block"),
        ("The answer is x.", "no_json_block"),
        (render_action(FINAL_ANSWER, "x") + "\n" + render_action(FINAL_ANSWER, "y"), "multiple_blocks"),
    ],
)
def test_trained_assistant_messages_are_checked_strictly(tmp_path, text, reason):
    example = langchain_example()
    example["messages"][-1]["content"] = text
    problems = lint_one(tmp_path, example)
    assert problems[0] == (2, reason, 4)
    assert problems[1:] == [(2, "no_final_answer", 4)]


@pytest.mark.parametrize("content", [[{"type": "text", "text": "x"}], 42])
def test_a_trained_langchain_step_that_is_not_text_is_a_problem_not_a_crash(tmp_path, content):
    example = langchain_example()
    example["messages"][-1]["content"] = content
    assert lint_one(tmp_path, example) == [(2, "missing_content", 4), (2, "no_json_block", 4), (2, "no_final_answer", 4)]


def test_no_final_answer_at_the_end(tmp_path):
    example = langchain_example(steps=[(SEARCH, "a", "['b']"), (SEARCH, "c", None)])
    assert lint_one(tmp_path, example) == [(2, "no_final_answer", 4)]


def test_observation_outside_the_tool_response_template(tmp_path):
    # the seed dataset's layout: the observation is a bare user message, not the TOOL RESPONSE template
    example = langchain_example(steps=[(SEARCH, "a", None)])
    example["messages"] += [{"role": "user", "content": "['b']"}, {"role": "assistant", "content": render_action(
        FINAL_ANSWER, "b")}]
    assert lint_one(tmp_path, example) == [(2, "observation_not_tool_response", 3)]


def test_no_final_answer_when_a_turn_stops_after_a_tool_response(tmp_path):
    example = langchain_example(steps=[(SEARCH, "a", "['b']"), (SEARCH, "c", None)])
    assert lint_one(tmp_path, example) == [(2, "no_final_answer", 4)]


def test_final_answer_then_a_new_question_is_fine(tmp_path):
    example = langchain_example()
    follow_up = langchain_example(question="And the authors?", steps=[(FINAL_ANSWER, "Ciresan et al.", None)])
    example["messages"] += follow_up["messages"][1:]
    assert lint_one(tmp_path, example, make_config(tmp_path)) == []


def test_too_many_steps_only_with_a_config(tmp_path):
    steps = [(SEARCH, f"q{i}", f"['r{i}']") for i in range(3)] + [(FINAL_ANSWER, "done", None)]
    example = langchain_example(steps=steps)
    assert lint_one(tmp_path, example, make_config(tmp_path)) == [(2, "too_many_steps", 8)]
    assert lint_one(tmp_path, example, make_config(tmp_path, agent={"max_steps": 4})) == []
    assert lint_one(tmp_path, example) == []


def test_unexpected_tool_response(tmp_path):
    example = langchain_example(steps=[(FINAL_ANSWER, "x", None)])
    example["messages"].insert(2, {"role": "user", "content": TEMPLATE_TOOL_RESPONSE.format(observation="[]")})
    assert lint_one(tmp_path, example) == [(2, "unexpected_tool_response", 2)]


# -- tokens and the model ---------------------------------------------------------------------------------------------


def test_over_token_limit_with_a_tiny_limit():
    example = langchain_example()
    problems = lint_example(example, tools=None, max_steps=None, model=DEFAULT_MODEL, token_limit=50)
    assert problems == [Problem(0, "over_token_limit", problems[0].detail)]
    assert str(count_example(example, DEFAULT_MODEL)) in problems[0].detail
    assert lint_example(example, tools=None, max_steps=None, model=DEFAULT_MODEL, token_limit=None) == []


def test_over_token_limit_from_the_config_and_the_model(tmp_path):
    config = make_config(tmp_path, export={"max_example_tokens": 50})
    assert lint_one(tmp_path, langchain_example(), config) == [(2, "over_token_limit", None)]
    huge = chat(("user", "word " * 5000), ("assistant", "ok"))
    assert found(lint_file(write(tmp_path, huge), model="gpt-3.5-turbo-0613")) == [(1, "over_token_limit", None)]


def test_model_choice_sets_the_tokenizer(tmp_path):
    path = write(tmp_path, langchain_example())
    example = langchain_example()
    assert lint_file(path).token_counts == [count_example(example, DEFAULT_MODEL)]
    assert lint_file(path, model="gpt-3.5-turbo-0125").token_counts == [count_example(example, "gpt-3.5-turbo")]
    config = make_config(tmp_path, export={"model": "gpt-3.5-turbo-0125"})
    assert lint_file(path, config).token_counts == [count_example(example, "gpt-3.5-turbo")]


# -- the report -------------------------------------------------------------------------------------------------------


def test_format_report(tmp_path):
    path = write(tmp_path, GOOD, "{oops", chat(("user", "q"), ("bot", "x"), ("assistant", "a")), GOOD)
    report = lint_file(path)
    assert report.by_reason() == {"invalid_json_line": 1, "unrecognized_role": 1}
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].startswith(f"{path}:2: invalid_json_line: not valid JSON")
    assert lines[1] == f"{path}:3: unrecognized_role: message 1: role 'bot' is not system, user, assistant or tool"
    assert f"{path}: 4 lines, 2 ok, 2 with problems" in text
    assert "invalid_json_line=1" in text and "tokens per example: min" in text
    assert "default epochs for 4 examples: 25" in text
    short = format_report(report, max_lines=1).splitlines()
    assert short[1] == "... and 1 more problem(s)"


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DistillError, match="no such file"):
        lint_file(tmp_path / "nope.jsonl")


def test_segmented_token_counts_equal_whole_text_counts():
    """count_text sums cached segments cut after a newline; the sum must equal encoding the text whole."""
    import random

    from distill.tokens import _SEGMENTED, count_text, encoding_for

    rng = random.Random(0)
    alphabet = ["\n", "\n\n", " ", "  ", "\t", "\r\n", "/", "a", "Word", "1", "123", "'s", "'", "-", "#", ">", "é",
                "\u0301", "\u00a0", "\u3000", "日本", "😀", ".", "):", "\x1c", "\u2028", "\u0085", "_", "`", "{"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(60, 400))) for _ in range(3000)]
    texts.append((Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8"))
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        encoding = encoding_for(model)
        for text in texts:
            expected = len(encoding.encode_ordinary(text))
            assert count_text(text, model) == expected, text
            assert count_text(text, model) == expected  # again, from the cache
    assert sum(len(t) >= _SEGMENTED and "\n" in t for t in texts) > 1000  # the segmented path was exercised


def test_token_count_cache_is_bounded_and_keeps_what_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two-generation count cache: exact counts, a repeated text survives the turnover, memory stays bounded."""
    from distill import tokens

    monkeypatch.setattr(tokens, "_CACHE_CHARS", 2_000)
    counts = tokens._Counts("gpt-4o-mini-2024-07-18")
    calls: list[str] = []
    real = tokens._encode_count

    def counting(text: str, model: str) -> int:
        calls.append(text)
        return real(text, model)

    monkeypatch.setattr(tokens, "_encode_count", counting)
    system = "You are a helpful assistant. Answer from the documents. " * 4
    for i in range(400):
        text = f"question {i}: what does section {i * 7} of the guide say about retries and back-off?"
        assert counts[text] == real(text, counts.model)
        assert counts[system] == real(system, counts.model)
        assert sum(map(len, counts)) + sum(map(len, counts.old)) <= 2 * 2_000 + len(system) + len(text)
    assert calls.count(system) == 1  # counted once, kept across every generation
