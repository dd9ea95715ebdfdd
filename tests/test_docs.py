"""The docs stay true to the code: the config reference against the pydantic models, the CLI tables against the
argparse parsers, the README front page against the site, and the site itself builds with strict link checks.

Conventions the checks read (stated at the top of docs/config.md and docs/cli.md):
- docs/config.md: every config key is a table row whose first cell is its path in backticks (`teacher.rpm`,
  `tools[].top_k`); rows of `tools[]` keys have a kinds column (`all` or the tool kinds), then the default; other
  rows have the default second. A default is `required`, `section` (a nested mapping) or a YAML value in backticks.
- docs/cli.md: one `## distill NAME` section per subcommand (and `## distill` for the global options); each flag a
  table row whose first cell starts with the flag in backticks (`` `--out DIR` ``).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib.util
import os
import re
import subprocess
import sys
import types
import typing
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field, create_model

from distill.cli import build_parser
from distill.config import Config, TeacherConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# --- the config reference ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One config key as the models define it: its path, the tool kinds that take it (None outside tools[]) and
    its default (`required`, `section`, or the value)."""

    path: str
    kinds: frozenset[str] | None
    default: Any


_REQUIRED, _SECTION = "required", "section"
_BY_KIND = "by kind"  # a key whose default differs between the tool kinds that take it


def _unwrap(annotation: Any) -> list[Any]:
    """The types an annotation allows, with Annotated and Optional/Union unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """The pydantic models a field holds, and whether it holds a list of them."""
    models: list[type[BaseModel]] = []
    is_list = False
    for t in _unwrap(annotation):
        if typing.get_origin(t) is list:
            for inner in _unwrap(typing.get_args(t)[0]):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    models.append(inner)
                    is_list = True
        elif isinstance(t, type) and issubclass(t, BaseModel):
            models.append(t)
    return models, is_list


def _kind_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = [a for t in _unwrap(field.annotation) if typing.get_origin(t) is typing.Literal for a in typing.get_args(t)]
    return args[0] if len(args) == 1 else None


def _default(field: Any) -> Any:
    if field.is_required():
        return _REQUIRED
    if field.default_factory is not None:
        value = field.default_factory()
        return _SECTION if isinstance(value, BaseModel) else value
    return field.default


def model_keys(model: type[BaseModel] = Config) -> dict[str, Key]:
    """Every key path of a config model, walked through nested models, lists of models and unions of tool kinds."""
    found: dict[str, Key] = {}

    def walk(m: type[BaseModel], prefix: str, kind: str | None) -> None:
        for name, field in m.model_fields.items():
            path = f"{prefix}{name}"
            kinds = frozenset({kind}) if kind is not None else None
            key = Key(path, kinds, _default(field))
            if path in found:
                old = found[path]
                default = old.default if old.default == key.default else _BY_KIND  # e.g. examples: a list, or per tool
                key = Key(path, (old.kinds or frozenset()) | (kinds or frozenset()) or None, default)
            found[path] = key
            models, is_list = _models_in(field.annotation)
            for inner in models:
                walk(inner, f"{path}{'[]' if is_list else ''}.", _kind_of(inner) or kind)

    walk(model, "", None)
    return found


_ROW = re.compile(r"^\|\s*`([A-Za-z_][\w.\[\]]*)`\s*\|(.*)\|\s*$")


def documented_keys(text: str) -> dict[str, tuple[frozenset[str] | None, str]]:
    """The key rows of a config reference: path -> (kinds, the default cell). Kinds `all` -> empty set."""
    rows: dict[str, tuple[frozenset[str] | None, str]] = {}
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        path, rest = match.groups()
        cells = [c.strip() for c in rest.split("|")]
        if path in rows:
            raise AssertionError(f"docs/config.md: `{path}` has two rows")
        if path.startswith("tools[]."):
            kinds = frozenset() if cells[0] == "all" else frozenset(re.findall(r"[\w-]+", cells[0]))
            rows[path] = (kinds, cells[1])
        else:
            rows[path] = (None, cells[0])
    return rows


def _cell_value(cell: str) -> Any:
    if cell in (_REQUIRED, _SECTION, _BY_KIND):
        return cell
    if not (cell.startswith("`") and cell.endswith("`")):
        return f"<not a default: {cell!r}>"
    return yaml.safe_load(cell.strip("`"))


def config_doc_problems(text: str, model: type[BaseModel] = Config) -> list[str]:
    """What is wrong between a config reference text and the models: missing rows, rows for no key, wrong
    defaults, wrong tool kinds. An empty list when they agree."""
    keys, rows = model_keys(model), documented_keys(text)
    all_kinds = frozenset(k for key in keys.values() for k in (key.kinds or ()))
    problems = []
    for path, key in keys.items():
        if path not in rows:
            default = key.default if key.default in (_REQUIRED, _SECTION, _BY_KIND) else f"`{yaml.safe_dump(key.default).split(chr(10))[0]}`"
            problems.append(f"`{path}` is a config key but has no row: add `| `{path}` | {default} | ... |`")
            continue
        kinds, cell = rows[path]
        value = _cell_value(cell)
        if value != key.default or isinstance(value, bool) != isinstance(key.default, bool):
            problems.append(f"`{path}`: documented default {cell} but the model's is {key.default!r}")
        if key.kinds is not None:
            want = frozenset() if key.kinds == all_kinds else key.kinds
            if kinds != want:
                problems.append(f"`{path}`: documented for kinds {sorted(kinds or ()) or 'all'} "
                                f"but taken by {sorted(want) or 'all'}")
    for path in rows.keys() - keys.keys():
        problems.append(f"`{path}` is documented but is no config key (remove its row or add the key)")
    return problems


def test_config_reference_matches_the_models() -> None:
    problems = config_doc_problems((DOCS / "config.md").read_text(encoding="utf-8"))
    assert not problems, "docs/config.md disagrees with distill/config.py:\n" + "\n".join(problems)


def test_model_keys_walk_nested_models_lists_and_tool_kinds() -> None:
    keys = model_keys()
    assert keys["teacher.rpm"].default is None
    assert keys["teacher.price.input"].default == _REQUIRED  # inside an optional nested model
    assert keys["generation.mix"].default == _SECTION
    assert keys["export.dedup.near_threshold"].default == 0.85
    assert keys["tools[].top_k"].kinds == {"retriever"}  # one member of the union of tool kinds
    assert keys["tools[].name"].kinds == {"retriever", "python", "simulated", "langchain", "mcp_tool"}
    assert keys["tools[].examples[].question"].default == _REQUIRED  # a list inside a list
    assert keys["sources[].path"].kinds is None
    assert "tools[].kind" in keys and "tools" in keys


def _config_with_teacher_key() -> type[BaseModel]:
    teacher = create_model("TeacherPlus", __base__=TeacherConfig, warmup_s=(float, Field(default=2.0)))
    return create_model("ConfigPlus", __base__=Config, teacher=(teacher, Field(default_factory=teacher)))


def test_a_key_added_without_docs_fails() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    problems = config_doc_problems(text, _config_with_teacher_key())
    assert problems == ["`teacher.warmup_s` is a config key but has no row: add `| `teacher.warmup_s` | `2.0` | ... |`"]
    documented = text + "\n| `teacher.warmup_s` | `2.0` | seconds of warm-up |\n"
    assert config_doc_problems(documented, _config_with_teacher_key()) == []


def test_a_documented_key_that_does_not_exist_fails() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    problems = config_doc_problems(text + "\n| `teacher.warp_speed` | `9` | how fast |\n")
    assert problems == ["`teacher.warp_speed` is documented but is no config key (remove its row or add the key)"]


def test_a_wrong_default_or_kind_fails() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    wrong_default = text.replace("| `teacher.concurrency` | `8` |", "| `teacher.concurrency` | `16` |")
    assert config_doc_problems(wrong_default) == [
        "`teacher.concurrency`: documented default `16` but the model's is 8"
    ]
    wrong_kind = text.replace("| `tools[].top_k` | retriever |", "| `tools[].top_k` | python |")
    assert config_doc_problems(wrong_kind) == [
        "`tools[].top_k`: documented for kinds ['python'] but taken by ['retriever']"
    ]
    missing = text.replace("| `export.dedup.num_perm` |", "| export.dedup.num_perm |")
    assert [p.split(" is ")[0] for p in config_doc_problems(missing)] == ["`export.dedup.num_perm`"]


# --- the CLI tables ------------------------------------------------------------------------------------------


def parser_flags() -> dict[str, set[str]]:
    """Every --flag of every `distill` subcommand (and of `distill` itself, under ""), from distill.cli's parser."""

    def flags(parser: argparse.ArgumentParser) -> set[str]:
        return {
            opt for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for opt in action.option_strings if opt.startswith("--")
        }

    parser = build_parser()
    out = {"": flags(parser)}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = flags(sub)
    return out


_SECTION_HEAD = re.compile(r"^## `distill(?: ([a-z-]+))?")
_FLAG_ROW = re.compile(r"^\|\s*`(--[a-z0-9-]+)")


def documented_flags(text: str) -> dict[str, set[str]]:
    """The flag rows of docs/cli.md per `## distill NAME` section ("" for `## distill`)."""
    out: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        head = _SECTION_HEAD.match(line)
        if head:
            current = head.group(1) or ""
            out.setdefault(current, set())
        elif line.startswith("## "):
            current = None
        elif current is not None and (row := _FLAG_ROW.match(line)):
            out[current].add(row.group(1))
    return out


def cli_doc_problems(text: str, flags: dict[str, set[str]]) -> list[str]:
    documented = documented_flags(text)
    problems = []
    for command, wanted in flags.items():
        name = f"distill {command}".strip()
        if command not in documented:
            problems.append(f"`{name}` has no `## `{name}`` section")
            continue
        problems += [f"`{name} {f}` exists but has no row" for f in sorted(wanted - documented[command])]
        problems += [f"`{name} {f}` is documented but is no flag" for f in sorted(documented[command] - wanted)]
    problems += [f"`distill {c}` is documented but is no command" for c in sorted(documented.keys() - flags.keys())]
    return problems


def test_cli_tables_match_the_parsers() -> None:
    flags = parser_flags()
    assert {"generate", "validate", "eval", "chat"} <= flags.keys()
    assert "--temperature" in flags["chat"] and "--max-lines" in flags["validate"]
    problems = cli_doc_problems((DOCS / "cli.md").read_text(encoding="utf-8"), flags)
    assert not problems, "docs/cli.md disagrees with distill/cli.py:\n" + "\n".join(problems)


def test_cli_check_catches_a_missing_and_a_made_up_flag() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    flags = parser_flags()
    flags["chat"] = flags["chat"] | {"--top-p"}
    assert cli_doc_problems(text, flags) == ["`distill chat --top-p` exists but has no row"]
    made_up = text.replace("| `--max-lines N`", "| `--max-lines N` | x | y |\n| `--colour`", 1)
    assert cli_doc_problems(made_up, parser_flags()) == ["`distill validate --colour` is documented but is no flag"]


# --- the README front page and the site ----------------------------------------------------------------------


def _nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(item: Any) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, list):
            return [p for x in item for p in pages(x)]
        if isinstance(item, dict):
            return [p for x in item.values() for p in pages(x)]
        return []

    return pages(config["nav"])


def _anchors(page: Path) -> set[str]:
    """The heading anchors of a page, slugged as Python-Markdown's toc extension does."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = unicodedata.normalize("NFKD", line.lstrip("#").strip()).encode("ascii", "ignore").decode()
            out.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower()))
    return out


def test_readme_quick_start_and_links() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link) and not link.startswith("#")]
    assert len(local) >= 10, "the front page links the docs pages"
    for link in local:
        file, _, anchor = link.partition("#")
        target = (ROOT / file).resolve()
        assert target.exists(), f"README.md links {link}, which does not exist"
        if anchor:
            assert anchor in _anchors(target), f"README.md links {link}, but that page has no such heading"
    nav = set(_nav_pages())
    for link in local:
        if link.startswith("docs/") and link.endswith(".md"):
            assert link.removeprefix("docs/") in nav, f"README.md links {link}, which is not in mkdocs.yml's nav"


def _undefined_names(code: str) -> set[str]:
    """Names a snippet reads but neither imports, assigns nor gets from builtins."""
    tree = ast.parse(code)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_python_snippets_stand_alone(page: str) -> None:
    path = README if page == "README.md" else DOCS / page
    snippets = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    for code in snippets:
        missing = _undefined_names(code)
        assert not missing, f"{page}: a snippet uses {sorted(missing)} without defining them:\n{code}"


def test_snippet_check_sees_a_borrowed_variable() -> None:
    assert _undefined_names("import distill\nreport = distill.report('x')\n") == set()
    assert _undefined_names("print(result.run_dir)\n") == {"result"}


def test_every_docs_page_is_in_the_nav() -> None:
    nav = _nav_pages()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(nav) == pages, "every docs/*.md page is in mkdocs.yml's nav, once, and every nav page exists"
    assert nav[0] == "index.md"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material not installed: pip install -e '.[docs]' (make test installs it)")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "config.html").is_file()
