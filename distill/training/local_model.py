"""A local model as a policy: a transformers model run in-process behind the `Teacher` protocol.

`LocalModel` answers a `TeacherRequest` with the model's own chat template, greedily, honouring the request's
`max_tokens` and stop sequences; generation runs in a worker thread (`asyncio.to_thread`) so the event loop stays
free, one generation at a time. With `request.tools` the tools go through the template's tool support, and the
reply's tool calls are read back in the template's own syntax, learnt by rendering a probe call through the
template (e.g. Hermes/Qwen `<tool_call>{...}</tool_call>`, Mistral `[TOOL_CALLS][...]`, Llama's bare JSON) and
returned OpenAI-shaped. `local_policy(spec, config)` picks this class for a model folder or a .gguf file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.teachers.base import TeacherReply, TeacherRequest
from distill.training.chat import TemplateError, render, template_messages
from distill.training.load import is_local_model, load_model

if TYPE_CHECKING:
    from distill.config import Config
    from distill.teachers.base import Teacher

__all__ = ["LocalModel", "ToolCallSyntax", "learn_tool_call_syntax", "local_policy"]

_PROBE_NAME, _PROBE_ARGS = "probe_tool_7f3a", {"probe_key_7f3a": "probe_value_7f3a"}


@dataclass(frozen=True, slots=True)
class ToolCallSyntax:
    """How a template writes a call: an opening marker (may be empty: bare JSON) before a JSON object (or a list of
    them), with the keys holding the function name and the arguments."""

    opener: str
    name_key: str
    args_key: str

    def parse(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """(the text outside the calls, the calls as (name, arguments) dicts)."""
        decoder = json.JSONDecoder()
        calls: list[dict[str, Any]] = []
        kept: list[str] = []
        pos = 0
        while True:
            at = text.find(self.opener, pos) if self.opener else text.find("{", pos)
            if at < 0:
                break
            start = at + len(self.opener)
            while start < len(text) and text[start].isspace():
                start += 1
            try:
                value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                pos = at + max(len(self.opener), 1)
                continue
            found = [v for v in (value if isinstance(value, list) else [value])
                     if isinstance(v, dict) and isinstance(v.get(self.name_key), str)]
            if not found:
                pos = at + max(len(self.opener), 1)
                continue
            kept.append(text[pos:at])
            calls += [{"name": v[self.name_key], "arguments": v.get(self.args_key, {})} for v in found]
            pos = end
            closer = _closer(self.opener)
            rest = text[pos:].lstrip()
            if closer and rest.startswith(closer):
                pos = len(text) - len(rest) + len(closer)
        kept.append(text[pos:])
        return "".join(kept).strip(), calls


def _closer(opener: str) -> str:
    return opener.replace("<", "</", 1) if opener.startswith("<") and opener.endswith(">") else ""


def learn_tool_call_syntax(tokenizer: Any) -> ToolCallSyntax | None:
    """Render a probe call through the template and read off its syntax; None when the template shows no calls."""
    tools = [{"type": "function", "function": {"name": _PROBE_NAME, "description": "probe", "parameters": {
        "type": "object", "properties": {"probe_key_7f3a": {"type": "string"}}, "required": ["probe_key_7f3a"]}}}]
    user = [{"role": "user", "content": "probe"}]
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_probe", "type": "function", "function": {"name": _PROBE_NAME, "arguments": dict(_PROBE_ARGS)}}]}
    try:
        head = render(tokenizer, user, tools, add_generation_prompt=True)
        full = render(tokenizer, user + [call], tools)
    except TemplateError:
        return None
    if not full.startswith(head) or _PROBE_NAME not in full[len(head):]:
        return None
    span = full[len(head):]
    decoder = json.JSONDecoder()
    for at in (i for i, ch in enumerate(span) if ch in "{["):
        try:
            value, _ = decoder.raw_decode(span, at)
        except json.JSONDecodeError:
            continue
        obj = value[0] if isinstance(value, list) and value else value
        if not isinstance(obj, dict):
            continue
        name_key = next((k for k, v in obj.items() if v == _PROBE_NAME), None)
        args_key = next((k for k, v in obj.items() if v == _PROBE_ARGS or v == json.dumps(_PROBE_ARGS)), None)
        if name_key and args_key:
            opener = span[:at].strip().split()[-1] if span[:at].strip() else ""
            return ToolCallSyntax(opener=opener, name_key=name_key, args_key=args_key)
    return None


class LocalModel:
    """A transformers model (folder or .gguf) playing the agent in-process: greedy, with its chat template."""

    provider = "local"

    def __init__(self, spec: str | Path, *, default_max_tokens: int = 512) -> None:
        self.spec = str(spec)
        path = Path(spec)
        self.model = path.name if path.suffix == ".gguf" else (path.resolve().name or self.spec)
        self.default_max_tokens = default_max_tokens
        self._model, self.tokenizer = load_model(spec)
        import torch

        if torch.cuda.is_available():
            self._model.to("cuda")
        self._lock = threading.Lock()
        self._syntax: ToolCallSyntax | None = None
        self._syntax_known = False
        self._end_ids = self._end_of_turn_ids()

    def _end_of_turn_ids(self) -> list[int]:
        """The eos token and the template's end-of-turn token (what follows an assistant message's text)."""
        ids = {i for i in [self.tokenizer.eos_token_id] if isinstance(i, int)}
        user, reply = [{"role": "user", "content": "x"}], {"role": "assistant", "content": "probe_reply"}
        try:
            full = render(self.tokenizer, user + [reply])
        except TemplateError:
            return sorted(ids)
        after = full[full.rfind("probe_reply") + len("probe_reply"):].strip()
        tail = self.tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        if tail:
            ids.add(int(tail[0]))
        return sorted(ids)

    def syntax(self) -> ToolCallSyntax | None:
        """The template's tool-call syntax (learnt once)."""
        if not self._syntax_known:
            self._syntax, self._syntax_known = learn_tool_call_syntax(self.tokenizer), True
        return self._syntax

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """Answer one request in a worker thread."""
        return await asyncio.to_thread(self._complete, request)

    def _complete(self, request: TeacherRequest) -> TeacherReply:
        import torch

        messages, _ = template_messages({"messages": request.messages})
        tools = request.tools or None
        if tools and self.syntax() is None:
            raise TemplateError(f"{self.spec}: its chat template has no tool-call syntax, so it cannot answer with "
                                "native tool calls", hint="evaluate it on a langchain-chat config, or use a model "
                                "whose template renders tools (Qwen2.5/Qwen3, SmolLM3, Llama 3.1)")
        prompt = render(self.tokenizer, messages, tools, add_generation_prompt=True)
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        limit = int(request.params.get("max_tokens") or request.params.get("max_completion_tokens")
                    or self.default_max_tokens)
        stop = request.params.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        with self._lock, torch.inference_mode():
            output = self._model.generate(
                ids.to(self._model.device), attention_mask=torch.ones_like(ids).to(self._model.device),
                max_new_tokens=limit, do_sample=False, eos_token_id=self._end_ids or None,
                pad_token_id=self.tokenizer.pad_token_id, stop_strings=stops or None,
                tokenizer=self.tokenizer if stops else None,
            )
        new = output[0][ids.shape[1]:].tolist()
        ended = bool(new) and new[-1] in self._end_ids
        # with tools, keep special tokens: a template's call marker may be one (the end-of-turn token is dropped)
        text = self.tokenizer.decode(new[:-1] if ended else new, skip_special_tokens=not tools)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
        finish = "stop" if ended or len(new) < limit else "length"
        usage = {"input": int(ids.shape[1]), "cached_input": 0, "output": len(new)}  # TeacherReply's keys (usage_of)
        calls = None
        if tools:
            text, parsed = self._syntax.parse(text) if self._syntax else (text, [])
            calls = [{"id": "call_" + hashlib.sha256(f"{i}:{c['name']}:{prompt[-200:]}".encode()).hexdigest()[:16],
                      "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]
                      if isinstance(c["arguments"], str) else json.dumps(c["arguments"], ensure_ascii=False)}}
                     for i, c in enumerate(parsed)] or None
            if calls and finish == "stop":
                finish = "tool_calls"
        return TeacherReply(text=text if text or not calls else None, finish_reason=finish, usage=usage,
                            model=self.model, tool_calls=calls)

    async def aclose(self) -> None:
        """Nothing to release (the weights go with the object)."""


def local_policy(spec: str, config: Config | None = None) -> Teacher | None:
    """The in-process policy for `spec` when it is an existing model folder or .gguf file; None otherwise (then
    `spec` is a model id for an endpoint). `config` is taken for symmetry with the endpoint policies."""
    if not is_local_model(spec):
        return None
    return LocalModel(spec)
