"""A fine-tuning line through a model's own chat template: the text, the token ids and the label mask.

distill builds the labels itself (TRL has no per-message weight): the line is rendered with the template, and the
span of each assistant message is found by rendering the conversation up to it (with the generation prompt) and
up to its end. Each span, from the first character the model writes to its end-of-turn token (whitespace the
template puts after that token is not trained), is tokenized on its own, so the ids are those the model sees at
inference (prompt, then what it generates). Only assistant messages with weight 1 (or no weight) are trained;
system, user and tool messages and `"weight": 0` assistant messages get labels -100.

openai-tools lines go through the template's tool support (`tools=`, `tool_calls`, `tool` messages); a template
that drops a tool schema, a tool call or a tool result is refused with a `TemplateError`, never trained on silently.
Only the tokenizer is needed here (no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from distill.errors import DistillError

__all__ = ["Encoded", "TemplateError", "encode_line", "render", "template_messages", "uses_tools"]

IGNORE = -100
_TOOLS_HINT = ("train a model whose chat template renders tools (e.g. Qwen2.5/Qwen3 Instruct, SmolLM3, Llama 3.1), "
               "or re-export the run as langchain-chat (agent.format: langchain-chat, then `distill export CONFIG "
               "--run RUN`: no teacher call)")


class TemplateError(DistillError):
    """The model's chat template cannot render a line faithfully (no template, no tool support, not prefix-stable)."""


@dataclass(slots=True)
class Encoded:
    """One line as training input: ids, labels (-100 = not trained) and the count of trained tokens."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def uses_tools(example: dict[str, Any]) -> bool:
    """Whether a line needs the template's tool support (tools, tool calls or tool messages)."""
    return bool(example.get("tools")) or any(
        m.get("tool_calls") or m.get("role") == "tool" for m in example.get("messages", [])
    )


def _arguments(value: Any) -> Any:
    """OpenAI sends arguments as JSON text; Hugging Face templates expect the object (`| tojson`)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, dict) else value
    return value


def template_messages(example: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The line's messages as Hugging Face chat templates take them (no `weight`; tool-call arguments as objects;
    each tool message with the `name` of the call it answers) and its tools (None when it has none)."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in example.get("messages", []):
        m = {k: v for k, v in message.items() if k != "weight"}
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                function = dict(call.get("function", {}))
                function["arguments"] = _arguments(function.get("arguments"))
                names[str(call.get("id"))] = str(function.get("name"))
                calls.append({**call, "function": function})
            m["tool_calls"] = calls
            if m.get("content") is None:
                m["content"] = ""
        if m.get("role") == "tool" and "name" not in m and str(m.get("tool_call_id")) in names:
            m["name"] = names[str(m.get("tool_call_id"))]
        out.append(m)
    return out, (example.get("tools") or None)


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
           add_generation_prompt: bool = False) -> str:
    """The template's text for `messages`; a template error becomes a TemplateError naming the model."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"{_name(tokenizer)}: the tokenizer has no chat template",
                            hint="train a chat (instruct) model, or set tokenizer.chat_template in its folder")
    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # noqa: BLE001 - jinja2 raises TemplateError, TypeError, ... from the template
        kind = "tool" if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages) else "line"
        raise TemplateError(f"{_name(tokenizer)}: its chat template cannot render this {kind} conversation: "
                            f"{type(exc).__name__}: {exc}"[:400], hint=_TOOLS_HINT if kind == "tool" else None) from None
    return str(text)


def _name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the model")


def _check_tools_rendered(tokenizer: Any, text: str, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None) -> None:
    """Refuse a template that silently drops what an openai-tools line is about."""
    missing: list[str] = []
    for tool in tools or []:
        name = str(tool.get("function", {}).get("name", ""))
        if name and name not in text:
            missing.append(f"the schema of tool {name!r}")
    for m in messages:
        for call in m.get("tool_calls") or []:
            name = str(call.get("function", {}).get("name", ""))
            if name not in text:
                missing.append(f"the call of {name!r}")
        if m.get("role") == "tool" and str(m.get("content", "")).strip() and str(m["content"]) not in text:
            missing.append(f"the result of call {m.get('tool_call_id')!r}")
    if missing:
        raise TemplateError(f"{_name(tokenizer)}: its chat template has no tool support: it drops "
                            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}", hint=_TOOLS_HINT)


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_line(tokenizer: Any, example: dict[str, Any]) -> Encoded:
    """Token ids and labels of one fine-tuning line (see the module docstring for the rule)."""
    originals = example.get("messages", [])
    messages, tools = template_messages(example)
    full = render(tokenizer, messages, tools)
    if uses_tools(example):
        _check_tools_rendered(tokenizer, full, messages, tools)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or originals[i].get("weight", 1) == 0:
            continue
        head = render(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1], tools)
        if not (full.startswith(head) and full.startswith(upto) and len(upto) >= len(head)):
            raise TemplateError(
                f"{_name(tokenizer)}: its chat template renders a conversation differently from its beginning "
                f"(message {i} of the line), so the assistant's tokens cannot be located",
                hint="use a template whose rendering of a conversation starts with the rendering of its first "
                "messages (most do; templates that rewrite earlier turns, e.g. dropping past reasoning, do not)")
        end = len(upto.rstrip())
        if end > len(head):
            spans.append((len(head), end))
    ids: list[int] = []
    labels: list[int] = []
    pos = 0
    for start, end in spans:
        before, inside = _tokens(tokenizer, full[pos:start]), _tokens(tokenizer, full[start:end])
        ids += before + inside
        labels += [IGNORE] * len(before) + inside
        pos = end
    rest = _tokens(tokenizer, full[pos:])
    return Encoded(ids + rest, labels + [IGNORE] * len(rest))
