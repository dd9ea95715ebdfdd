"""`distill train` and the local policy on a tiny Llama-style model built here (no download): the label mask on real
langchain-chat and openai-tools lines, training that writes a loadable folder, resume, skipped long lines."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from distill.cli import main
from distill.config import config_from_dict
from distill.generation.pipeline import generate
from distill.teachers.base import TeacherRequest
from distill.training.chat import IGNORE, TemplateError, encode_line
from distill.training.local_model import LocalModel, learn_tool_call_syntax, local_policy
from distill.training.train import train

from .conftest import BASE_CONFIG
from .test_openai_tools import support_config

END = "<|im_end|>"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# ChatML with Hermes/Qwen-style tool support: schemas in the system turn, <tool_call> blocks, <tool_response> turns.
CHATML_TOOLS = (
    "{% if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n"
    "{% endif %}# Tools\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' and tools %}"
    "{% elif m['role'] == 'assistant' and m['tool_calls'] %}<|im_start|>assistant\n"
    "{% if m['content'] %}{{ m['content'] }}\n{% endif %}"
    "{% for c in m['tool_calls'] %}<tool_call>\n{{ {'name': c['function']['name'], "
    "'arguments': c['function']['arguments']} | tojson }}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(t) for t in (run / "train.jsonl").read_text(encoding="utf-8").splitlines()]


def _tiny_model(folder: Path, texts: list[str], template: str) -> Path:
    """A byte-level BPE tokenizer trained on `texts` and a 2-layer Llama with hidden size 32, saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", END]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1200, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=END, pad_token="<|endoftext|>")
    tokenizer.chat_template = template
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _texts(lines: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(line, ensure_ascii=False) for line in lines] + [
        str(m.get("content") or "") for line in lines for m in line["messages"]]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A langchain-chat run from the offline pipeline, multi-turn lines (weight-0 history) included."""
    tmp = tmp_path_factory.mktemp("chat")
    data = copy.deepcopy(BASE_CONFIG)
    data["generation"] = {"conversations": 10, "seed": 1, "mix": {"tool": 0.4, "direct": 0.2, "multi_turn": 0.4}}
    generate(config_from_dict(data, file=str(tmp / "cfg.yaml"), base_dir=tmp), tmp / "run", progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def tools_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tools") / "run"
    generate(support_config(conversations=10, seed=5), out, progress=False)
    return out


@pytest.fixture(scope="module")
def chatml_model(tmp_path_factory: pytest.TempPathFactory, chat_run: Path, tools_run: Path) -> Path:
    texts = _texts(_lines(chat_run) + _lines(tools_run))
    return _tiny_model(tmp_path_factory.mktemp("chatml"), texts, CHATML)


@pytest.fixture(scope="module")
def tools_model(tmp_path_factory: pytest.TempPathFactory, chat_run: Path, tools_run: Path) -> Path:
    texts = _texts(_lines(chat_run) + _lines(tools_run))
    return _tiny_model(tmp_path_factory.mktemp("chatml-tools"), texts, CHATML_TOOLS)


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _trained_text(tokenizer: Any, line: dict[str, Any]) -> str:
    encoded = encode_line(tokenizer, line)
    assert len(encoded.input_ids) == len(encoded.labels)
    return str(tokenizer.decode([t for t in encoded.labels if t != IGNORE], skip_special_tokens=False))


def test_mask_trains_only_weight_one_assistant_messages_of_langchain_chat_lines(chat_run: Path,
                                                                                chatml_model: Path) -> None:
    tokenizer = _tokenizer(chatml_model)
    lines = _lines(chat_run)
    with_history = [line for line in lines if any(m.get("weight") == 0 for m in line["messages"])]
    assert with_history, "the run has multi-turn lines with weight-0 history"
    for line in lines:
        expected = "".join(m["content"] + END for m in line["messages"]
                           if m["role"] == "assistant" and m.get("weight", 1) == 1)
        assert _trained_text(tokenizer, line) == expected
    for line in with_history:
        trained = _trained_text(tokenizer, line)
        for m in line["messages"]:
            if m["role"] != "assistant" or m.get("weight") == 0:
                assert m["content"] not in trained
        # the full sequence is the template's rendering: nothing was dropped
        encoded = encode_line(tokenizer, line)
        rendered = tokenizer.apply_chat_template([{k: v for k, v in m.items() if k != "weight"}
                                                  for m in line["messages"]], tokenize=False)
        assert tokenizer.decode(encoded.input_ids, skip_special_tokens=False) == rendered


def test_mask_on_openai_tools_lines_goes_through_the_templates_tool_support(tools_run: Path,
                                                                            tools_model: Path) -> None:
    tokenizer = _tokenizer(tools_model)
    lines = _lines(tools_run)
    assert any(m.get("tool_calls") for line in lines for m in line["messages"])
    for line in lines:
        expected = ""
        for m in line["messages"]:
            if m["role"] != "assistant" or m.get("weight", 1) == 0:
                continue
            if not m.get("tool_calls"):
                expected += m["content"] + END
                continue
            text = m["content"] + "\n" if m.get("content") else ""
            for call in m["tool_calls"]:
                args = json.loads(call["function"]["arguments"])
                text += ("<tool_call>\n" + json.dumps({"name": call["function"]["name"], "arguments": args},
                                                      ensure_ascii=False) + "\n</tool_call>")
            expected += text + END
        trained = _trained_text(tokenizer, line)
        assert trained == expected
        full = tokenizer.decode(encode_line(tokenizer, line).input_ids, skip_special_tokens=False)
        for tool in line["tools"]:  # schemas and tool results are in the sequence, masked
            assert tool["function"]["name"] in full
        for m in line["messages"]:
            if m["role"] == "tool":
                assert f"<tool_response>\n{m['content']}\n</tool_response>" in full
        assert "<tool_response>" not in trained and "# Tools" not in trained


def test_a_template_without_tool_support_is_refused_clearly(tools_run: Path, chatml_model: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    tokenizer = _tokenizer(chatml_model)
    line = next(line for line in _lines(tools_run) if any(m.get("tool_calls") for m in line["messages"]))
    with pytest.raises(TemplateError, match="no tool support: it drops"):
        encode_line(tokenizer, line)
    code = main(["train", str(tools_run), "--base", str(chatml_model), "--max-steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.jsonl line 1: " in err and "no tool support" in err and "hint:" in err


def test_two_steps_write_a_folder_that_reloads_and_generates(chat_run: Path, chatml_model: Path,
                                                             tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "student"
    result = train(chat_run, base=str(chatml_model), out=out, max_steps=2, grad_accum=1, progress=False)
    f = json.loads((out / "train.json").read_text())
    assert f == result.figures and f["steps"] == 2 and not f["resumed"]
    assert [p["step"] for p in f["loss_curve"]] == [1, 2] and all(p["loss"] > 0 for p in f["loss_curve"])
    assert f["data"]["sha256"] == hashlib.sha256((chat_run / "train.jsonl").read_bytes()).hexdigest()
    assert f["data"]["examples"] == len(_lines(chat_run)) and f["data"]["skipped"]["too_long"] == 0
    assert f["hyperparameters"]["mode"] == "lora" and f["base_model"] == str(chatml_model)
    assert f["tokens_per_second"] > 0 and f["peak_memory"]["rss_mb"] > 0
    assert (out / "chat_template.jinja").read_text() == CHATML
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.use_cache is True
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged: a plain model
    base = AutoModelForCausalLM.from_pretrained(chatml_model)
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed  # the merged LoRA moved weights
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is BM25?"}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    generated = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > ids.shape[1]


def test_interrupted_training_resumes_from_its_checkpoint(chat_run: Path, chatml_model: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "student"
    args = ["train", str(chat_run), "--base", str(chatml_model), "--out", str(out), "--full", "--grad-accum", "1",
            "--save-steps", "1", "--no-progress"]
    assert main([*args, "--max-steps", "2"]) == 0
    first = json.loads((out / "train.json").read_text())
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert main([*args, "--max-steps", "4"]) == 0
    assert "for 4 steps" in capsys.readouterr().out
    second = json.loads((out / "train.json").read_text())
    assert second["resumed"] and second["steps"] == 4
    assert second["loss_curve"][:2] == first["loss_curve"]  # steps 1-2 come from the checkpoint, not a new run
    assert [p["step"] for p in second["loss_curve"]] == [1, 2, 3, 4]
    # the checkpoints belong to this data: other data in the same folder is refused, not mixed in
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps(x) for x in _lines(chat_run)[:3]) + "\n")
    with pytest.raises(Exception, match="checkpoints of another training"):
        train(other, base=str(chatml_model), out=out, lora=False, max_steps=1, grad_accum=1, progress=False)


def test_over_long_examples_are_skipped_and_counted(chat_run: Path, chatml_model: Path, tmp_path: Path) -> None:
    tokenizer = _tokenizer(chatml_model)
    lengths = sorted(len(encode_line(tokenizer, line).input_ids) for line in _lines(chat_run))
    limit = lengths[len(lengths) // 2]
    over = sum(n > limit for n in lengths)
    assert 0 < over < len(lengths)
    kept = [n for n in lengths if n <= limit]
    # one step over every kept line: the trainer sees each one whole (TRL's own max_length would have cut them)
    result = train(chat_run, base=str(chatml_model), out=tmp_path / "s", grad_accum=len(kept), max_tokens=limit,
                   progress=False)
    data = result.figures["data"]
    assert result.skipped["too_long"] == over and data["examples"] == len(kept) and result.steps == 1
    assert data["tokens"]["longest"] == max(kept) and data["tokens"]["total"] == sum(kept)
    assert result.figures["tokens_seen"] == sum(kept)
    with pytest.raises(Exception, match="max_tokens must be at least 1"):
        train(chat_run, base=str(chatml_model), max_tokens=0)


def test_local_policy_answers_a_teacher_request(chatml_model: Path, tools_model: Path) -> None:
    assert local_policy("gpt-4o-mini", None) is None
    assert local_policy(str(chatml_model.parent / "missing"), None) is None
    policy = local_policy(str(chatml_model), None)
    assert isinstance(policy, LocalModel) and policy.provider == "local"
    request = TeacherRequest(stage="eval", messages=[{"role": "user", "content": "What is BM25?"}],
                             params={"max_tokens": 6, "temperature": 0})
    reply = asyncio.run(policy.complete(request))
    again = asyncio.run(policy.complete(request))
    assert isinstance(reply.text, str) and reply.text == again.text  # greedy
    assert 0 < reply.usage["output"] <= 6 and reply.finish_reason in ("stop", "length")
    asyncio.run(policy.aclose())

    # tool calls are read back in the template's own syntax, OpenAI-shaped
    syntax = learn_tool_call_syntax(_tokenizer(tools_model))
    assert syntax is not None and syntax.opener == "<tool_call>"
    text, calls = syntax.parse('Let me look.\n<tool_call>\n{"name": "search_docs", "arguments": {"query": "BM25"}}\n'
                               '</tool_call><tool_call>\n{"name": "calculator", "arguments": {"input": "2 * 3"}}'
                               "\n</tool_call>")
    assert text == "Let me look." and calls == [{"name": "search_docs", "arguments": {"query": "BM25"}},
                                                {"name": "calculator", "arguments": {"input": "2 * 3"}}]
    assert learn_tool_call_syntax(_tokenizer(chatml_model)) is None
    tools = [{"type": "function", "function": {"name": "search_docs", "description": "Searches.",
                                               "parameters": {"type": "object", "properties": {}}}}]
    reply = asyncio.run(LocalModel(tools_model).complete(
        TeacherRequest(stage="eval", messages=request.messages, params={"max_tokens": 4}, tools=tools)))
    assert reply.usage["input"] > 0 and (reply.text is not None or reply.tool_calls)
    with pytest.raises(TemplateError, match="no tool-call syntax"):
        asyncio.run(policy.complete(TeacherRequest(stage="eval", messages=request.messages, tools=tools)))


def test_eval_plays_a_trained_folder_in_process_beside_another_model(chat_run: Path, chatml_model: Path,
                                                                       tmp_path: Path, capsys) -> None:
    """`distill eval --model PATH`: the local folder plays through the same evaluator and agent loop, in one table
    with the base model (both in-process: no endpoint, no key)."""

    student = tmp_path / "student"
    train(chat_run, base=str(chatml_model), out=student, max_steps=1, grad_accum=1, progress=False)
    config = tmp_path / "cfg.yaml"
    data = copy.deepcopy(BASE_CONFIG)
    data["agent"]["max_steps"] = 2
    config.write_text(json.dumps(data))
    code = main(["eval", str(config), "--run", str(chat_run), "--model", str(chatml_model), "--model", str(student),
                 "--n", "2", "--max-tokens", "8", "--out", str(tmp_path / "eval")])
    assert code == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert list(report["models"]) == [str(chatml_model), str(student)]
    for figures in report["models"].values():
        assert figures["base_url"] == "in-process"
        assert figures["metrics"]["completion"]["total"] == report["questions"]["count"] > 0
        assert figures["call_errors"] == {}  # every question got answers from the local model
        assert figures["timing"]["completion_tokens"] > 0  # its usage is counted: the table's tokens/s
    table = capsys.readouterr().out
    assert "format adherence (valid steps)" in table and str(student) in table
