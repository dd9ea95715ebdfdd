"""`distill report`: one self-contained HTML file with every chart and escaped examples, and report.json."""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distill.cli import main
from distill.config import config_from_dict
from distill.generation.pipeline import generate
from distill.reporting.report import SECTIONS, write_report

from .conftest import BASE_CONFIG


class _Refs(HTMLParser):
    """Every tag name and every src / href-like attribute value of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.refs += [v or "" for k, v in attrs if k == "src" or k.endswith("href") or k == "srcset"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small offline run with duplicates and over-limit rejects (so every chart has data but cost)."""
    tmp = tmp_path_factory.mktemp("report")
    data = copy.deepcopy(BASE_CONFIG)
    # Three one-sentence documents and 24 conversations: more than the offline teacher has distinct questions for, so
    # some repeat (duplicates to chart).
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "bm25.md").write_text("BM25 ranks passages by the query terms they contain and how rare those terms are.\n")
    (docs / "validator.md").write_text("The validator rejects every reply with text outside the fenced json block.\n")
    (docs / "memory.md").write_text("The window memory keeps the last exchanges as plain questions and answers.\n")
    data["sources"] = [{"path": "docs"}]
    data["generation"] = {"conversations": 24, "seed": 0, "max_extra_conversations": 0,
                          "mix": {"tool": 0.5, "direct": 0.25, "multi_turn": 0.25}}
    data["export"] = {"validation_fraction": 0.2, "max_example_tokens": 650}  # dedup on (the default)
    config = config_from_dict(data, file=str(tmp / "cfg.yaml"), base_dir=tmp)
    generate(config, tmp / "run", progress=False)
    return tmp / "run"


def _sections(page: str) -> dict[str, str]:
    pattern = r'<section class="chart" id="chart-(\w+)" data-chart="\w+">(.*?)</section>'
    return dict(re.findall(pattern, page, re.DOTALL))


def test_report_is_self_contained_and_has_every_chart(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    result = write_report(folder)
    assert result.html == folder / "report.html" and result.json == folder / "report.json"
    page = result.html.read_text(encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text())

    refs = _Refs()
    refs.feed(page)
    assert refs.refs and all(r.startswith("#") for r in refs.refs), [r for r in refs.refs if not r.startswith("#")]
    assert not refs.tags & {"script", "link", "img", "iframe", "object", "embed", "image"}
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    # the only "http" in the page: the SVG namespace names, which are never fetched
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= {"http://www.w3.org/2000/svg",
                                                             "http://www.w3.org/1999/xlink"}
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)

    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    for key, body in sections.items():
        if key == "cost":
            assert "No cost recorded" in body and "<svg" not in body
        elif key == "judge":  # this run is not judged (tests/test_judge.py draws the chart)
            assert "not judged" in body and "<svg" not in body
        else:
            assert body.count("<svg") == 1, key
    assert "limit 650" in sections["tokens"]
    assert "duplicate_question" in sections["duplicates"] and "<table" in sections["duplicates"]

    figures = json.loads(result.json.read_text())
    assert figures == json.loads(json.dumps(result.figures))
    tokens = figures["tokens"]
    assert sum(tokens["counts"]["train"]) == manifest["examples"]["train"]
    assert sum(tokens["counts"]["validation"]) == manifest["examples"]["validation"]
    assert sum(tokens["counts"]["over_limit"]) == manifest["rejects_by_reason"]["over_token_limit"] > 0
    assert tokens["limit"] == 650
    accepted_turns = manifest["examples"]["train"] + manifest["examples"]["validation"]
    assert figures["actions"]["counts"]["Final Answer"] == accepted_turns
    assert figures["duplicates"]["dropped"] == manifest["duplicates"]["dropped"] > 0
    assert sum(sum(c.values()) for c in figures["steps"]["by_outcome"].values()) == (
        manifest["conversations"]["requested"]
    )
    assert figures["mix"]["by_kind"] == manifest["coverage"]["by_kind"]
    assert figures["cost"] is None
    # a handful of conversations, accepted and rejected
    assert page.count('class="conv accepted"') == 3 and page.count('class="conv rejected"') == 3


def test_examples_are_escaped_and_recorded_cost_is_charted(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    rows = [json.loads(line) for line in (folder / "trajectories.jsonl").read_text().splitlines()]
    dropped = {json.loads(line)["id"] for line in (folder / "rejected.jsonl").read_text().splitlines()}
    first = next(r for r in rows if r["kind"] == "tool" and r["id"] not in dropped)
    evil = '<img src="https://example.com/x.png" onerror="alert(1)"> & <b>"bold"</b>'
    first["turns"][0]["question"] = evil
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["teacher_usage"] = {  # what a run on a priced teacher records (distill/resume.py)
        "max_cost_usd": 5.0,
        "this_invocation": {"usd": 0.1, "by_stage": {"rollout": {"usd": 0.1}}},
        "run_folder": {"usd": 0.42, "by_stage": {
            "questions": {"responses": 8, "input_tokens": 4000, "cached_input_tokens": 0, "output_tokens": 300,
                          "usd": 0.12},
            "rollout": {"responses": 20, "input_tokens": 30000, "cached_input_tokens": 12000, "output_tokens": 900,
                        "usd": 0.30},
        }},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))

    result = write_report(folder)
    page = result.html.read_text()
    assert evil not in page and "<img" not in page
    assert "&lt;img src=&quot;https://example.com/x.png&quot; onerror=&quot;alert(1)&quot;&gt; &amp; " in page
    cost = _sections(page)["cost"]
    assert "<svg" in cost and "$0.4200 of generation.max_cost_usd $5" in cost and "12,000 cached" in cost
    assert result.figures["cost"]["by_stage"] == {"questions": 0.12, "rollout": 0.30}


def test_cli_report(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    assert main(["report", str(folder), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert str(folder / "report.html") in out and "duplicates dropped" in out
    assert (folder / "report.html").read_text().count('class="conv accepted"') == 1
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
