"""Coverage and the mix top-up: a skewed acceptance rate still meets generation.mix, within the budget, and says so
when it cannot."""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.generation.questions import plan_conversations
from distill.generation.sources import chunk_documents, load_documents
from distill.generation.top_up import plan_extra
from tests.fake_openai import FakeResponse

WORDS = [
    "amber", "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "iris", "jasper", "kelp", "lagoon",
    "mesa", "nectar", "opal", "prairie", "quartz", "reef", "sierra", "tundra", "umber", "valley", "willow", "xenon",
    "yarrow", "zephyr",
]


def _skewed_teacher() -> Callable[[dict], FakeResponse | str]:
    """Tool questions are answered well; two out of three small-talk (direct) answers break the format."""
    counters = {"direct": itertools.count(), "tool": itertools.count()}
    lock = threading.Lock()

    def script(body: dict) -> FakeResponse | str:
        if body.get("response_format"):
            prompt = body["messages"][1]["content"]
            kind = "direct" if "without any tool" in prompt else "tool"
            with lock:
                k = next(counters[kind])
            n = 2 if "several user messages" in prompt else 1
            if kind == "direct":  # every question distinct, so dedup keeps them all
                return json.dumps({"questions": [f"Small talk {WORDS[k % 26]} {WORDS[(k * 7 + 3) % 26]} #{k}"]})
            return json.dumps({"questions": [f"Where is {WORDS[k % 26]} {WORDS[(k // 26) % 26]} {i}?"
                                             for i in range(n)]})
        last = body["messages"][-1]["content"]
        if last.startswith("TOOL RESPONSE"):
            return render_action("Final Answer", "Found it in the documents.")
        if "Small talk" in last:
            k = int(re.search(r"Small talk \w+ \w+ #(\d+)", last).group(1))
            answer = render_action("Final Answer", f"Hello {k}!")
            return answer if k % 3 == 0 else "Sure! " + answer  # text outside the block: rejected
        question = next(line for line in last.splitlines() if line.startswith("Where is"))
        return render_action("Vector Search Tool", question)

    return script


def _config(make_config, **generation):
    return make_config(
        teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0, "concurrency": 4},
        generation={"conversations": 20, "seed": 3, "mix": {"tool": 0.5, "direct": 0.3, "multi_turn": 0.2},
                    **generation},
        export={"validation_fraction": 0.0},  # dedup on (the default)
    )


def test_skewed_acceptance_still_meets_the_mix_with_extra_conversations(fake_openai, make_config, tmp_path) -> None:
    fake_openai.chat_script = _skewed_teacher()
    config = _config(make_config)  # budget: conversations // 2 = 10
    result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    cov, top = manifest["coverage"], manifest["top_up"]

    direct = cov["by_kind"]["direct"]
    assert direct["target"] == 6 and direct["accepted"] >= 6 - cov["allowed_shortfall"]
    assert direct["rate"] == pytest.approx(direct["accepted"] / direct["requested"], abs=1e-3)
    assert direct["rate"] < 0.5 and direct["requested"] > 6  # most small talk was rejected, so more was asked for
    assert cov["mix_met"] and top["mix_met"] and top["stopped"] == "met"
    assert cov["by_kind"]["tool"]["accepted"] == 10 and cov["by_kind"]["multi_turn"]["accepted"] == 4
    # the extras were all small talk, within the budget, numbered after the 20 planned conversations
    assert 0 < top["extra_conversations"] <= 10
    assert sum(Counter(r["planned"]).get("direct", 0) for r in top["rounds"]) == top["extra_conversations"]
    plans = [json.loads(line) for line in (tmp_path / "run" / "plans.jsonl").read_text().splitlines()]
    assert [p["id"] for p in plans] == [f"c{i:06d}" for i in range(20 + top["extra_conversations"])]
    assert {p["kind"] for p in plans[20:]} == {"direct"}

    c = manifest["conversations"]
    assert c["requested"] == 20 + top["extra_conversations"] == c["accepted"] + c["rejected"] + c["failed"]
    assert manifest["rejects_by_reason"] == {"text_outside_block": c["rejected"]}
    assert cov["by_outcome"] == {"tool_used": 14, "no_tool": direct["accepted"], "follow_up": 4}
    assert cov["by_tool"]["Vector Search Tool"]["accepted"] == 14
    assert sum(d["accepted"] for d in cov["by_document"].values()) == c["accepted"]


def test_the_top_up_starts_while_the_last_conversations_are_in_flight(fake_openai, make_config, tmp_path) -> None:
    # The last conversation of the planned 40 is held at the endpoint until a 41st questions request (a top-up
    # conversation's) arrives: a top-up that waited for the planned conversations to drain would never send it.
    skewed, lock = _skewed_teacher(), threading.Lock()
    asked, top_up_started, held = itertools.count(1), threading.Event(), []

    def script(body: dict) -> FakeResponse | str:
        answer = skewed(body)
        if body.get("response_format"):
            with lock:
                n = next(asked)
            if n == 41:
                top_up_started.set()
            if n == 40:  # the last questions request of the planned conversations: mark its questions
                questions = json.loads(str(answer))["questions"]
                return json.dumps({"questions": [q + " LAST" for q in questions]})
        elif not held and "LAST" in body["messages"][-1]["content"] and "TOOL RESPONSE" not in body["messages"][-1]["content"]:
            held.append(top_up_started.wait(5))  # True: the top-up started while this one was held
        return answer

    fake_openai.chat_script = script
    config = _config(make_config, conversations=40)
    manifest = json.loads(generate(config, tmp_path / "run", progress=False).manifest.read_text())
    assert held == [True]
    first = manifest["top_up"]["rounds"][0]
    assert first["after"] == 40 - 40 // 5  # decided at a fixed count in plan order, with 8 conversations to come
    assert manifest["top_up"]["mix_met"] and manifest["conversations"]["requested"] > 40


def test_without_budget_the_shortfall_is_reported_not_hidden(fake_openai, make_config, tmp_path, caplog) -> None:
    fake_openai.chat_script = _skewed_teacher()
    config = _config(make_config, max_extra_conversations=0)
    with caplog.at_level(logging.WARNING, logger="distill.generation.top_up"):
        result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["conversations"]["requested"] == 20
    assert manifest["top_up"] == {"budget": 0, "extra_conversations": 0, "rounds": [], "stopped": "budget",
                                  "mix_met": False}
    assert manifest["coverage"]["mix_met"] is False
    assert manifest["coverage"]["by_kind"]["direct"] == {
        "share": 0.3, "target": 6, "requested": 6, "accepted": 2, "off_plan": 0, "rate": 0.333, "met": False,
    }
    assert "generation.mix not met" in caplog.text and "direct 2/6" in caplog.text


def test_duplicates_count_against_the_mix_and_are_topped_up(make_config, tmp_path: Path) -> None:
    # 150 conversations over the corpus' 24 chunks: the offline teacher's questions are bound to repeat.
    config = make_config(
        generation={"conversations": 150, "seed": 0, "mix_tolerance": 0.0,
                    "mix": {"tool": 0.5, "direct": 0.25, "multi_turn": 0.25}},
        export={"validation_fraction": 0.2},  # dedup on (the default)
    )
    result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["duplicates"]["by_reason"].get("duplicate_question", 0) > 0
    assert manifest["top_up"]["extra_conversations"] > 0
    assert manifest["coverage"]["mix_met"]
    c = manifest["conversations"]
    assert c["requested"] == c["accepted"] + c["rejected"] + c["failed"]


def test_extra_plans_are_reproducible_continue_the_numbering_and_spread(
    make_config, calculator_tool, configs_on_path
) -> None:
    config = make_config(
        tools=[
            {"name": "Vector Search Tool", "description": "Searches.", "kind": "retriever"},
            calculator_tool,
        ]
    )
    documents, _ = load_documents(config)
    chunks = chunk_documents(documents, config.chunking)
    plans = plan_conversations(config, chunks)
    wanted = {"tool": 6, "direct": 2}
    a = plan_extra(config, chunks, plans, wanted, Counter({"Vector Search Tool": 9, "Calculator": 3}))
    b = plan_extra(config, chunks, plans, wanted, Counter({"Vector Search Tool": 9, "Calculator": 3}))
    assert a == b
    assert [p.index for p in a] == list(range(40, 48)) and a[0].id == "c000040"
    assert Counter(p.kind for p in a) == {"tool": 6, "direct": 2}
    # the tool with the fewest accepted conversations gets the extras until it catches up (3 + 6 = 9)
    assert Counter(p.tool for p in a if p.kind == "tool") == {"Calculator": 6}
    used = Counter(p.chunk_id for p in plans)
    assert all(used[p.chunk_id] == min(used.values()) for p in a[:1])
    assert len({p.chunk_id for p in a}) == len(a)  # least-used chunks first: no chunk twice in a small batch
    assert len({p.seed for p in a}) == len(a)
