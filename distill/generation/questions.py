"""Question synthesis: plan the conversations (kinds, chunks, tools) and ask the teacher for the user's messages.

The plan is fixed by the config and seed before any call, so every request is reproducible (and a ledger can answer
it again). The OpenAI teacher answers with structured outputs (`response_format` with a JSON schema); the prompts
are the templates in `prompts/`.
"""

from __future__ import annotations

import json
import random
from string import Template
from typing import Any

from distill.config import Config
from distill.errors import Rejection
from distill.generation.sources import Chunk
from distill.teachers.base import TeacherReply, TeacherRequest
from distill.templates import template
from distill.trajectory import ConversationKind, Plan, PlanList

__all__ = ["QuestionError", "parse_questions", "plan_conversations", "question_request"]

# The templates live in the repository's prompts/; distill/prompts links there, so wheels ship them as package data.

_KIND_INSTRUCTIONS: dict[str, str] = {
    "tool": "The user asks something the assistant can only answer by using the tool `$tool` (for the search tool: "
    "a fact stated in the passage).",
    "direct": "The user says something the assistant should answer directly without any tool: small talk, thanks, "
    "a request about the conversation itself, or general knowledge unrelated to the documents.",
    "multi_turn": "A conversation of several user messages: the first needs the tool `$tool` (a fact from the "
    "passage); each later one is a natural follow-up that refers back to the earlier exchange (e.g. 'and what "
    "about ...?').",
}

SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "questions",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"questions": {"type": "array", "items": {"type": "string"}}},
            "required": ["questions"],
            "additionalProperties": False,
        },
    },
}


class QuestionError(Rejection):
    """The teacher's questions could not be used; `reason` is machine-readable."""


def _counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Exact counts per kind by largest remainder (they always sum to total)."""
    raw = {k: total * v for k, v in shares.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (raw[k] - counts[k], shares[k]), reverse=True)[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def _eligible_tools(config: Config) -> list[str]:
    offline = config.teacher.resolved_provider() == "offline"
    names = [t.name for t in config.tools if t.searches or not offline or t.examples]
    return names or [config.tools[0].name]


def plan_conversations(config: Config, chunks: list[Chunk]) -> PlanList:
    """The conversations to generate: exact mix counts, shuffled by seed; chunks and tools assigned in rotation."""
    if not chunks:
        return PlanList()
    gen = config.generation
    rng = random.Random(gen.seed)
    counts = _counts(gen.conversations, gen.mix.model_dump())
    kinds: list[ConversationKind] = [k for k, n in counts.items() for _ in range(n)]  # type: ignore[misc]
    rng.shuffle(kinds)
    order = list(range(len(chunks)))
    rng.shuffle(order)
    tools = _eligible_tools(config)
    plans = PlanList()
    for i, kind in enumerate(kinds):
        chunk = chunks[order[i % len(order)]]
        plans.append(
            Plan(
                id=f"c{i:06d}",
                index=i,
                kind=kind,
                chunk_id=chunk.id,
                doc_id=chunk.doc_id,
                turns=1 + gen.follow_ups if kind == "multi_turn" else 1,
                tool=None if kind == "direct" else tools[i % len(tools)],
                seed=rng.randrange(2**31),
            )
        )
    return plans


def question_request(config: Config, plan: Plan, chunk: Chunk) -> TeacherRequest:
    """The structured-output request for a conversation's user messages."""
    tool_lines = "\n".join(f"- {t.name}: {t.description}" for t in config.tools)
    tool_cfg = config.tool(plan.tool) if plan.tool else None
    examples = ""
    if tool_cfg is not None and tool_cfg.examples:
        shown = "\n".join(f"- {e.question}" for e in tool_cfg.examples[:5])
        examples = f"Example questions for {tool_cfg.name}:\n{shown}\n"
    kind_text = Template(_KIND_INSTRUCTIONS[plan.kind]).safe_substitute(tool=plan.tool or "")
    user = template("questions.user.md").substitute(
        tools=tool_lines, kind=plan.kind, kind_instructions=kind_text, chunk=chunk.text, n=plan.turns, examples=examples
    )
    return TeacherRequest(
        stage="questions",
        messages=[
            {"role": "system", "content": template("questions.system.md").template.strip()},
            {"role": "user", "content": user},
        ],
        params={"temperature": config.teacher.temperature, "max_tokens": config.teacher.max_tokens, "seed": plan.seed},
        response_format=SCHEMA,
        context={"plan": plan, "chunk": chunk, "tool": tool_cfg},
    )


def parse_questions(reply: TeacherReply, plan: Plan) -> list[str]:
    """The user messages from a structured reply; QuestionError when unusable."""
    if reply.finish_reason in ("length", "content_filter"):
        raise QuestionError(
            "truncated" if reply.finish_reason == "length" else "content_filter",
            f"finish_reason={reply.finish_reason}",
        )
    try:
        data = json.loads(reply.text or "")
    except ValueError as exc:
        raise QuestionError("bad_question", f"questions are not JSON: {exc}") from None
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list) or not all(isinstance(q, str) and q.strip() for q in questions):
        raise QuestionError("bad_question", "expected {\"questions\": [non-empty strings]}")
    if len(questions) < plan.turns:
        raise QuestionError("bad_question", f"asked for {plan.turns} question(s), got {len(questions)}")
    return [q.strip() for q in questions[: plan.turns]]
