"""The ledger: content-addressed storage of every teacher outcome, read back with full fidelity, durable, in WAL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import ConfigError
from distill.teachers.base import TeacherCallError, TeacherRequest
from distill.teachers.costs import Meter, Price, cost_usd, price_for
from distill.teachers.ledger import Ledger
from distill.teachers.openai_teacher import OpenAITeacher, reply_from_body
from tests.fake_openai import FakeResponse, chat_completion

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}


def _request(**changes) -> TeacherRequest:
    base = {
        "stage": "rollout",
        "messages": [{"role": "user", "content": "What is BM25?"}],
        "params": {"temperature": 0.7, "max_tokens": 64, "seed": 1},
    }
    base.update(changes)
    return TeacherRequest(**base)


def test_key_covers_everything_sent_and_nothing_else() -> None:
    base = _request()
    key = base.key("gpt-4o")
    assert key == _request().key("gpt-4o")
    variants = [
        base.key("gpt-4o-mini"),
        _request(messages=[{"role": "user", "content": "What is BM25 ?"}]).key("gpt-4o"),
        _request(params={"temperature": 0.7, "max_tokens": 64, "seed": 2}).key("gpt-4o"),
        _request(response_format={"type": "json_object"}).key("gpt-4o"),
        _request(tools=[{"type": "function", "function": {"name": "search", "parameters": {}}}]).key("gpt-4o"),
        _request(tool_choice="required").key("gpt-4o"),
    ]
    assert len({key, *variants}) == len(variants) + 1
    # what is never sent does not change the key
    assert _request(stage="questions", context={"plan": "anything"}).key("gpt-4o") == key


def test_record_lookup_and_failed_rows_never_answer(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    blob = json.dumps(BODY).encode()
    ledger.record("k1", ok=False, stage="rollout", model="gpt-4o", request=blob, response='{"error": "boom"}',
                  status=500, reason="http_500", attempts=3)
    assert ledger.lookup("k1") is None  # a failure is evidence, not an answer
    raw = json.dumps(chat_completion("first", usage={"prompt_tokens": 10, "completion_tokens": 2}))
    ledger.record("k1", ok=True, stage="rollout", model="gpt-4o", request=blob, response=raw, status=200,
                  finish_reason="stop", usage={"input": 10, "cached_input": 0, "output": 2}, cost_usd=0.5,
                  latency_s=0.25, attempts=2)
    hit = ledger.lookup("k1")
    assert hit is not None and hit.ok and hit.response == raw and hit.attempts == 2
    assert hit.request() == BODY
    assert hit.usage == {"input": 10, "cached_input": 0, "output": 2}
    assert ledger.lookup("other") is None
    assert ledger.count() == 2 and ledger.count(ok=False) == 1
    assert ledger.total_usd() == 0.5
    assert ledger.totals()["rollout"]["responses"] == 1 and ledger.totals()["rollout"]["failed"] == 1
    ledger.close()


def test_wal_and_durable_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    code = (
        "from distill.teachers.ledger import Ledger\n"
        f"l = Ledger.open({str(path)!r})\n"
        "l.record('k', ok=True, stage='questions', model='m', request=b'{}', response='{\"choices\": []}')\n"
        "import os; os._exit(0)\n"  # no close, no cleanup: as after a kill
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    ledger = Ledger.open(path)
    assert ledger.lookup("k") is not None
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()


def test_stored_body_rebuilds_every_reply_field_including_tool_calls() -> None:
    calls = [{"id": "call_9", "type": "function", "function": {"name": "search", "arguments": '{"q": "bm25"}'}}]
    body = chat_completion(None, finish_reason="tool_calls", tool_calls=calls, model="gpt-4o-2024-08-06",
                           usage={"prompt_tokens": 50, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 32}})
    reply = reply_from_body(json.loads(json.dumps(body)), "gpt-4o")
    assert reply.text is None and reply.finish_reason == "tool_calls"
    assert reply.tool_calls == calls
    assert reply.usage == {"input": 50, "cached_input": 32, "output": 7}
    assert reply.model == "gpt-4o-2024-08-06"
    with pytest.raises(TeacherCallError) as err:
        reply_from_body({"choices": []}, "gpt-4o")
    assert err.value.reason == "no_choices"


def test_teacher_looks_in_the_ledger_first_and_stores_before_parsing(fake_openai, make_config, tmp_path) -> None:
    answers = iter([
        FakeResponse(json=chat_completion("```json\n{\"action\": \"Final", finish_reason="length")),
        FakeResponse(status=400, json={"error": {"message": "context too long"}}),
    ])
    fake_openai.chat_script = lambda body: next(answers)
    config = make_config(teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0})
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    teacher = OpenAITeacher(config)
    meter = Meter(price=Price(2.5, 1.25, 10.0))
    teacher.use_run(ledger, meter)

    async def run() -> None:
        truncated = await teacher.complete(_request())
        assert truncated.finish_reason == "length"
        again = await teacher.complete(_request())  # the truncated answer was paid: the ledger answers it
        assert again.text == truncated.text
        with pytest.raises(TeacherCallError) as err:
            await teacher.complete(_request(params={"seed": 5}))
        assert err.value.reason == "http_400"
        await teacher.aclose()

    asyncio.run(run())
    assert len(fake_openai.requests_to("/chat/completions")) == 2
    rows = list(ledger.entries())
    assert [(r.ok, r.status, r.finish_reason, r.reason) for r in rows] == [
        (True, 200, "length", None),
        (False, 400, None, "http_400"),
    ]
    assert "context too long" in rows[1].response
    assert rows[0].request()["messages"] == _request().messages
    assert meter.stages["rollout"].requests == 1 and meter.stages["rollout"].ledger_hits == 1
    assert meter.stages["rollout"].failed == 1
    ledger.close()


def test_prices_and_costs() -> None:
    assert price_for("gpt-4o-mini-2024-07-18") == price_for("gpt-4o-mini") != price_for("gpt-4o")
    assert price_for("gpt-4o-2024-08-06") == price_for("gpt-4o")
    assert price_for("gpt-4.1-mini") != price_for("gpt-4.1")
    assert price_for("llama-3-70b") is None
    price = Price(input=2.0, cached_input=1.0, output=8.0)
    # 1000 prompt tokens of which 400 cached, 500 output: 600*2 + 400*1 + 500*8 per 1M
    assert cost_usd({"input": 1000, "cached_input": 400, "output": 500}, price) == pytest.approx(0.0056)
    assert cost_usd({"input": 1}, None) is None


def test_budget_without_a_price_is_a_config_error(make_config) -> None:
    config = make_config(teacher={"provider": "openai", "model": "my-local-llama"}, generation={
        "conversations": 4, "max_cost_usd": 5})
    with pytest.raises(ConfigError) as err:
        Meter.for_config(config)
    assert "generation.max_cost_usd" in str(err.value) and "teacher.price" in str(err.value)
    priced = make_config(teacher={"provider": "openai", "model": "my-local-llama",
                                  "price": {"input": 1, "output": 2}}, generation={"conversations": 4, "max_cost_usd": 5})
    assert Meter.for_config(priced).price == Price(1.0, 1.0, 2.0)


def test_absorb_unites_ledgers_by_request_key(tmp_path: Path) -> None:
    def rows(ledger: Ledger) -> list[tuple]:
        return sorted((e.key, e.ok, e.response, e.reason, e.created_at) for e in ledger.entries())

    with Ledger.open(tmp_path / "a.sqlite") as a, Ledger.open(tmp_path / "b.sqlite") as b:
        a.record("k1", ok=True, stage="rollout", model="m", request=b"{}", response='{"a": 1}', cost_usd=0.5)
        b.record("k1", ok=True, stage="rollout", model="m", request=b"{}", response='{"a": 1}', cost_usd=0.5)
        b.record("k2", ok=True, stage="rollout", model="m", request=b"{}", response='{"b": 2}', cost_usd=0.25)
        b.record("k3", ok=False, stage="rollout", model="m", request=b"{}", response=None, reason="timeout")
        expected = sorted({r[:4] for r in rows(a) + rows(b)})
        assert a.absorb(tmp_path / "b.sqlite") == 2  # k1 is answered here already: one answer per request
        assert a.absorb(tmp_path / "b.sqlite") == 0  # absorbing again adds nothing
        assert sorted({r[:4] for r in rows(a)}) == expected and a.count() == 3
        assert a.lookup("k2").response == '{"b": 2}' and a.total_usd() == 0.75
