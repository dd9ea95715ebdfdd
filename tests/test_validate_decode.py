"""The validator's fast paths give exactly what the plain ones give: line decoding, duplicate-key JSON, token counts.

`decode_line` walks a line's keys to keep a repeated tools list's JSON text; on every input it must return what
`json.loads` returns (and that list's `json.dumps` text) or raise the very error `json.loads` raises. `loads_unique`
reuses one decoder; `count_text` counts a text whose head it has seen as that head plus its last segment.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from distill.schema import DuplicateKeyError, loads_unique
from distill.validation.decode import decode_line, loads

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
TOOLS = json.dumps([TOOL])
MESSAGES = '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'

TRICKY: list[str] = [
    f'{{"messages": {MESSAGES}, "tools": {TOOLS}, "parallel_tool_calls": false}}',
    f'{{"messages": {MESSAGES}, "tools": {TOOLS}}}\n',
    f'  \t{{ "tools" :{TOOLS} ,\r\n"messages":{MESSAGES}}}  \n',  # whitespace of every kind json allows
    f'{{"messages": {MESSAGES}, "tools": {TOOLS[:-1]}]}}',  # a tools list equal up to a differing byte
    f'{{"messages": {MESSAGES}, "tools": {TOOLS[:-2]}, "x": 1}}]}}',
    f'{{"messages": {MESSAGES}, "tools": {TOOLS}, "tools": 5}}',  # duplicate keys: the last value is kept
    f'{{"messages": {MESSAGES}, "tools": 5, "tools": {TOOLS}}}',
    f'{{"tools": {TOOLS}, "messages": {MESSAGES}, "tools": []}}',
    f'{{"\\u0074ools": {TOOLS}, "messages": {MESSAGES}}}',  # an escaped key is the same key
    f'{{"messages": {MESSAGES}, "tools": [{{"type": "function", "function": {{"name": "\\ud83d\\ude00\\ud800"}}}}]}}',
    f'{{"messages": {MESSAGES}, "tools": [{{"n": 123456789012345678901234567890, "x": 1e400, "y": -0.0}}]}}',
    f'{{"messages": {MESSAGES}, "tools": [NaN]}}',
    f'{{"messages": {MESSAGES}, "tools": [Infinity]}}',
    f'{{"messages": {MESSAGES}, "tools": {TOOLS},}}',  # trailing comma
    f'{{"messages": {MESSAGES}, "tools": {TOOLS}}} x',  # extra data
    f'{{"messages": {MESSAGES}, "tools": {TOOLS}',  # cut short
    f'{{"messages": {MESSAGES}, "tools" {TOOLS}}}',
    f'{{"messages": {MESSAGES} "tools": {TOOLS}}}',
    f'\ufeff{{"messages": {MESSAGES}, "tools": {TOOLS}}}',
    f'{{"messages": {MESSAGES}, "tools": "[1, 2]"}}',
    f'{{"messages": {MESSAGES}, "note": "\\"tools\\": [1]"}}',
    f'["tools", {TOOLS}]',
    '{"tools": []}',
    '{"tools": [], }',
    '{"tools": [1, 2]}',
    '{"tools": [\x01]}',
    '{"tools": ["a\tb"]}',  # a raw tab in a string: json's strict mode refuses it
    '{}',
    '{"tools"}',
    '"tools"',
    ' ',
]


def _outcome(call: Any, text: str) -> Any:
    try:
        return "ok", call(text)
    except ValueError as exc:
        return type(exc), str(exc)


def _checked(text: str) -> Any:
    """decode_line's value, after checking that its tools text, where it gives one, is json.dumps of the tools."""
    value, tools_text = decode_line(text)
    if tools_text is not None:
        assert tools_text == json.dumps(value["tools"], ensure_ascii=False)
    return value


def _mutations(rng: random.Random) -> list[str]:
    out = []
    for _ in range(600):
        chars = list(rng.choice(TRICKY[:3]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars))
            chars.insert(at, rng.choice(['"', ",", "]", "}", "[", "{", " ", ":", "\\", "1", "tools"]))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("rounds", [1, 2])  # the second round finds the tools lists kept by the first
def test_decode_line_is_json_loads_on_every_input(rounds):
    texts = TRICKY + _mutations(random.Random(7))
    for _ in range(rounds):
        for text in texts:
            got, expected = _outcome(_checked, text), _outcome(loads, text)
            assert repr(got) == repr(expected), text  # repr: -0.0, inf and key order compared too


def test_a_kept_tools_list_is_the_same_value_on_every_line():
    line = f'{{"messages": {MESSAGES}, "tools": {TOOLS}}}'
    first, text = decode_line(line)
    again, text_again = decode_line(line)
    assert first == again == json.loads(line) and text == text_again == json.dumps([TOOL])
    assert decode_line(f'{{"messages": {MESSAGES}, "tools": {TOOLS}, "tools": 5}}')[1] is None  # the last value counts


@pytest.mark.parametrize(
    "text",
    ['{"a": 1}', '{"a": 1, "a": 2}', '{"b": {"a": 1, "a": 1}}', '[{"x": 1}, {"x": 2, "y": 3, "x": 4}]', '{"a": NaN}',
     "\ufeff{}", '{"a": 1,}', "[]", "  7 ", b'{"a": 1}', b'{"a": 1, "a": 2}', "\u00e9", '"\\ud800"'],
)
def test_loads_unique_answers_as_before(text):
    def before(t: str | bytes) -> Any:
        def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in pairs:
                if key in out:
                    raise DuplicateKeyError(f"duplicate key {key!r}")
                out[key] = value
            return out

        return json.loads(t, object_pairs_hook=unique)

    assert repr(_outcome(loads_unique, text)) == repr(_outcome(before, text))


def test_token_counts_of_texts_that_share_a_head_equal_whole_text_counts():
    """Texts made of a few heads (templates) and new tails: the head + last-segment path is exact."""
    from distill.tokens import count_text, encoding_for

    rng = random.Random(3)
    pieces = ["\n", "Word", " x", "-----", "/path", "TOOLS", "é", "日本", "'s", "  ", "\n\n", "1", "{", "😀", "\r\n"]
    heads = ["".join(rng.choice(pieces) for _ in range(rng.randrange(80, 300))) + "\n" for _ in range(20)]
    tails = ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 60))) for _ in range(300)]
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        encoding = encoding_for(model)
        for i, tail in enumerate(tails):
            text = heads[i % len(heads)] + tail
            assert count_text(text, model) == len(encoding.encode_ordinary(text)), text


def test_token_counts_of_list_reprs_cut_at_their_items_equal_whole_text_counts():
    """A tool's list of passages is counted item by item (cut before the space of ", '"): exact, repeats or not."""
    from distill.tokens import count_text, encoding_for

    rng = random.Random(5)
    pieces = ["Word", " x", "\\n", "é", "日本", "'s", "  ", "1", ",", ", '", ', "', "'", '"', " ", "😀", "\u00a0", "\t", "-"]
    passages = ["".join(rng.choice(pieces) for _ in range(rng.randrange(5, 120))) for _ in range(40)]
    texts = [repr(rng.sample(passages, rng.randrange(1, 5))) + rng.choice(["", " (copy 2)", ",", " '"]) for _ in range(400)]
    texts += ["TOOL RESPONSE:\n---\n" + t + "\n\nUSER'S INPUT\n" for t in texts[:100]]
    assert sum(", '" in t or ', "' in t for t in texts) > 300
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        encoding = encoding_for(model)
        for text in texts:
            expected = len(encoding.encode_ordinary(text))
            assert count_text(text, model) == expected, text
            assert count_text(text, model) == expected
