"""LangChain's conversational-chat agent (CHAT_CONVERSATIONAL_REACT_DESCRIPTION): the runtime prompt, exactly.

The prompt is built by langchain-classic's own `ConversationalChatAgent.create_prompt` from its own templates
(PREFIX, SUFFIX, FORMAT_INSTRUCTIONS, TEMPLATE_TOOL_RESPONSE); nothing is retyped here. One model call is: system,
chat history (raw questions and plain-text answers of earlier turns, as `ConversationBufferWindowMemory` keeps
them), the SUFFIX human message with the tools and the input, then the scratchpad (each earlier step's raw output
and its TOOL RESPONSE). A fine-tuning line is the last call's messages plus the final answer; earlier turns'
answers are history and carry `"weight": 0`. One action per message: parallel tool calls are not renderable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from distill.config import Config
from distill.formats.base import STRUCTURE_READ, NotRenderable, Reading
from distill.formats.langchain_actions import ToolSpec, check_action, render_action
from distill.trajectory import Reason, Step, Trajectory, Turn

__all__ = ["STOP_SEQUENCES", "LangChainChatFormat"]

# What ConversationalChatAgent binds as stop sequences (Agent._stop).
STOP_SEQUENCES = ["\nObservation:", "\n\tObservation:"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}
# marker texts no prompt contains: rendered once in their place, they show where LangChain puts the input, the history
# and a tool's observation (LangChainChatFormat._prompt_frame)
_INPUT, _HUMAN, _AI = "\x00distill-input\x00", "\x00distill-human\x00", "\x00distill-ai\x00"


def _langchain_tools(config: Config) -> list[Any]:
    from langchain_core.tools import Tool

    def _unused(_: str) -> str:  # the prompt only needs names and descriptions
        raise RuntimeError("rendering tools are never called")

    return [Tool(name=t.name, description=t.description, func=_unused) for t in config.tools]


class LangChainChatFormat:
    """Renders trajectories as the messages LangChain's ConversationalChatAgent sends at each step."""

    name = "langchain-chat"
    tools: list[dict[str, Any]] | None = None  # the tools are described in the prompt, not sent
    parallel_tool_calls: bool | None = None

    def __init__(self, config: Config) -> None:
        from langchain_classic.agents import ConversationalChatAgent
        from langchain_classic.agents.conversational_chat.prompt import PREFIX, TEMPLATE_TOOL_RESPONSE
        from langchain_core.prompts import ChatPromptTemplate

        self.config = config
        self.prompt = cast(ChatPromptTemplate, ConversationalChatAgent.create_prompt(
            _langchain_tools(config), system_message=config.agent.system_prompt or PREFIX
        ))
        self.template_tool_response = TEMPLATE_TOOL_RESPONSE
        self.memory_window = config.agent.memory_window
        self.tool_specs = {t.name: ToolSpec(t.name, t.input_schema) for t in config.tools}
        self.stop: list[str] | None = list(STOP_SEQUENCES)
        self._structured = frozenset(t.name for t in config.tools if t.structured)
        self._cache: dict[tuple[Any, str], tuple[tuple[str, str], ...]] = {}
        last = self.prompt.messages[-1]
        if getattr(last, "variable_name", None) != "agent_scratchpad":  # the assembly messages_for_step relies on
            raise RuntimeError("LangChain's ConversationalChatAgent prompt no longer ends with agent_scratchpad")
        self._frame = self._prompt_frame()
        response = self.template_tool_response.format(observation=_INPUT)
        self._response = tuple(response.split(_INPUT)) if response.count(_INPUT) == 1 else None

    # -- what the runtime sends ------------------------------------------------------------------------------
    def _history(self, earlier: Sequence[Turn]) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage

        kept = list(earlier)[-self.memory_window :] if self.memory_window else []
        messages: list[Any] = []
        for turn in kept:
            messages.append(HumanMessage(content=turn.question))
            messages.append(AIMessage(content=turn.answer or ""))
        return messages

    def _prompt_frame(self) -> tuple[str, str, str] | None:
        """(system, before, after): what LangChain's prompt renders around a history and an input, read once by
        rendering it with marker texts; None when its messages do not have that plain shape (then every call is
        rendered by LangChain itself). A call is then system, the history's messages verbatim and before + input +
        after: the same text LangChain writes, at a fraction of the cost (`tests/test_parity.py` replays the
        runtime; `tests/test_formats.py` compares both paths)."""
        from langchain_core.messages import AIMessage, HumanMessage

        history = [HumanMessage(content=_HUMAN), AIMessage(content=_AI)]
        rendered = self.prompt.format_messages(input=_INPUT, chat_history=history, agent_scratchpad=[])
        shape = [(m.type, m.content) for m in rendered]
        if len(shape) != 4 or [t for t, _ in shape] != ["system", "human", "ai", "human"]:
            return None
        (_, system), (_, human), (_, ai), (_, suffix) = shape
        if human != _HUMAN or ai != _AI or not isinstance(system, str) or not isinstance(suffix, str):
            return None
        if any(mark in system for mark in (_INPUT, _HUMAN, _AI)) or suffix.count(_INPUT) != 1:
            return None
        before, after = suffix.split(_INPUT)
        return system, before, after

    def _base(self, earlier: Sequence[Turn], question: str) -> list[dict[str, Any]]:
        """System, history and the SUFFIX human message, as LangChain's prompt renders them."""
        frame = self._frame
        if frame is None:
            return self._base_rendered(earlier, question)
        system, before, after = frame
        messages = [{"role": "system", "content": system}]
        if self.memory_window:
            for turn in list(earlier)[-self.memory_window :]:
                messages.append({"role": "user", "content": turn.question})
                messages.append({"role": "assistant", "content": turn.answer or ""})
        messages.append({"role": "user", "content": before + question + after})
        return messages

    def _base_rendered(self, earlier: Sequence[Turn], question: str) -> list[dict[str, Any]]:
        """`_base` rendered by LangChain's prompt itself (cached per turn)."""
        kept = list(earlier)[-self.memory_window :]
        key = (tuple((t.question, t.answer) for t in kept), question)
        cached = self._cache.get(key)
        if cached is None:
            lc_messages = self.prompt.format_messages(
                input=question, chat_history=self._history(earlier), agent_scratchpad=[]
            )
            cached = tuple((_ROLES[m.type], str(m.content)) for m in lc_messages)  # text content only
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = cached
        return [{"role": role, "content": content} for role, content in cached]

    def messages_for_step(self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """The chat messages the runtime sends the model for the next step of a turn (OpenAI dicts).

        The prompt's last part is the `agent_scratchpad` placeholder, so the scratchpad messages (built as
        `ConversationalChatAgent._construct_scratchpad` builds them) follow the rendered prompt.
        """
        messages = self._base(earlier, question)
        response = self._response
        for step in steps:
            # The canonical blob, not the teacher's raw text: the student is trained to write exactly this, so at
            # run time its own output (action.log) in the scratchpad is this text too.
            messages.append({"role": "assistant", "content": render_action(step.action, step.action_input)})
            if response is not None:  # TEMPLATE_TOOL_RESPONSE's text around {observation}
                observation = f"{response[0]}{step.observation}{response[1]}"
            else:
                observation = self.template_tool_response.format(observation=step.observation)
            messages.append({"role": "user", "content": observation})
        return messages

    def messages_as_written(
        self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]
    ) -> list[dict[str, Any]]:
        """`messages_for_step` with the model's own raw outputs in the scratchpad (the runtime's `action.log`)."""
        messages = self.messages_for_step(earlier, question, steps)
        start = len(messages) - 2 * len(steps)
        for i, step in enumerate(steps):
            messages[start + 2 * i]["content"] = step.raw
        return messages

    # -- parsing the model's answer ----------------------------------------------------------------------------
    def check(self, text: str | None, finish_reason: str | None = None):
        """Strictly check one model answer against this agent's tools."""
        return check_action(text, self.tool_specs, finish_reason=finish_reason)

    def read(self, reply: Any) -> Reading:
        """A teacher reply (`TeacherReply`) checked strictly: one step (a tool call or the final answer)."""
        text = reply.text
        verdict = check_action(text, self.tool_specs, finish_reason=reply.finish_reason)
        if not verdict.ok:
            return Reading(ok=False, reason=str(verdict.reason), detail=verdict.detail, raw=text)
        assert verdict.action is not None  # an accepted verdict carries its action
        action, action_input = verdict.action.action, verdict.action.action_input
        if action in self._structured:  # the record keeps structured arguments as canonical JSON text
            action_input = json.dumps(json.loads(action_input), ensure_ascii=False)
        return Reading(ok=True, steps=[Step(action=action, action_input=action_input, raw=text or "")])

    def named_actions(self, reply: Any, reason: str) -> list[str | None] | None:
        """The action a rejected answer named when it passed the structure checks but failed on its content."""
        text = reply.text
        if reason not in STRUCTURE_READ or not text:
            return None
        body = text.strip()
        try:
            data = json.loads(body[body.index("{") : body.rindex("}") + 1])
        except ValueError:
            return None
        action = data.get("action") if isinstance(data, dict) else None
        return [action] if isinstance(action, str) else None

    # -- fine-tuning lines ---------------------------------------------------------------------------------------
    def render_turn(self, earlier: Sequence[Turn], turn: Turn) -> dict[str, Any]:
        """One fine-tuning line: the runtime messages of the turn's last step, every step canonical, history at weight 0."""
        messages = self.messages_for_step(earlier, turn.question, turn.steps[:-1])
        kept = 2 * len(list(earlier)[-self.memory_window :]) if self.memory_window else 0  # _history's messages
        for message in messages[1 : 1 + kept]:
            if message["role"] == "assistant":
                message["weight"] = 0
        last = turn.steps[-1]
        messages.append({"role": "assistant", "content": render_action(last.action, last.action_input)})
        return {"messages": messages}

    def render(self, trajectory: Trajectory) -> list[dict[str, Any]]:
        """Every turn of an accepted trajectory as its own fine-tuning line."""
        if any(step.parallel for turn in trajectory.turns for step in turn.steps):
            raise NotRenderable(
                Reason.FORMAT_DEPENDENT,
                "parallel tool calls cannot be rendered in langchain-chat (one action per message); "
                "regenerate with this format or export with agent.format: openai-tools",
            )
        return [self.render_turn(trajectory.turns[:i], turn) for i, turn in enumerate(trajectory.turns)]
