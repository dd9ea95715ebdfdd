"""The YAML config: pydantic models (one section per stage, `extra="forbid"`), loading and error reporting.

`load_config(path)` reads YAML, validates it, resolves relative paths against the config file's folder and checks
what can be checked before any work starts (source paths exist, python tools import, schemas are valid). Every
problem is raised as a `ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from distill.errors import ConfigError
from distill.judge_config import JudgeConfig  # re-exported: the judge section is part of the config
from distill.pool_config import PoolFields  # teacher.endpoints: a pool of endpoints
from distill.registry import FORMATS, TEACHERS
from distill.tool_config import (  # re-exported: the tool section is part of the config
    _FUNCTION_NAME,
    FINAL_ANSWER,
    PythonTool,
    RetrieverTool,
    SimulatedTool,
    ToolConfig,
    ToolEntry,
    ToolExample,
    ToolSpec,
    expand_entries,
    is_object_schema,
    on_tool_models_change,
    register_tool_model,
    resolve_callable,
    tool_kinds,
    tool_union,
)
from distill.tool_config import StrictModel as _Model
from distill.tool_sources import LangchainTool, McpServer, McpTool, McpToolsEntry  # registers mcp, langchain

__all__ = [
    "FINAL_ANSWER", "AgentConfig", "ChunkingConfig", "Config", "DedupConfig", "ExportConfig",
    "GenerationConfig", "JudgeConfig", "LangchainTool", "McpServer", "McpTool", "McpToolsEntry", "MixConfig",
    "PriceConfig", "PublishConfig", "PythonTool", "RetrieverTool", "SimulatedTool", "SourceConfig", "TeacherConfig",
    "ToolConfig", "ToolEntry", "ToolExample", "ToolSpec", "config_from_dict", "is_object_schema", "load_config",
    "register_tool_model", "resolve_callable", "tool_kinds",
]

if TYPE_CHECKING:
    _ToolField = ToolSpec
else:
    _ToolField = tool_union()  # rebuilt from the registry when a kind is registered (_rebuild_tools_field)

class AgentConfig(_Model):
    """How the agent talks: its format, system prompt and step budget."""

    format: Annotated[str, AfterValidator(FORMATS.check)] = Field(
        default="langchain-chat", description="langchain-chat, openai-tools, or one added with register_format"
    )
    system_prompt: str | None = Field(
        default=None, description="null = LangChain's own PREFIX (langchain-chat) or distill's default (openai-tools)"
    )
    max_steps: int = Field(default=3, ge=1, le=20, description="tool calls + final answer per turn")
    memory_window: int = Field(default=5, ge=1, description="ConversationBufferWindowMemory k (turns kept)")
    parallel_tool_calls: bool = Field(
        default=False, description="openai-tools: the model may make several tool calls in one message"
    )

    @field_validator("system_prompt")
    @classmethod
    def _no_template_braces(cls, value: str | None) -> str | None:
        if value is not None and ("{" in value or "}" in value):
            raise ValueError(
                "contains { or }, which LangChain's prompt template would treat as variables; remove them"
            )
        return value


class SourceConfig(_Model):
    """A file, folder or glob of documents, or a Hugging Face dataset."""

    path: str | None = None
    hf_dataset: str | None = None
    split: str = "train"
    text_field: str = "text"

    @model_validator(mode="after")
    def _one_of(self) -> SourceConfig:
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one of path or hf_dataset")
        return self


class ChunkingConfig(_Model):
    """How documents are cut into retrievable chunks (characters, on paragraph and sentence boundaries)."""

    max_chars: int = Field(default=1000, ge=100)
    overlap: int = Field(default=100, ge=0)


class PriceConfig(_Model):
    """A teacher model's price in USD per 1M tokens (distill/costs.py has defaults for common OpenAI models)."""

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="null = the input price")
    output: float = Field(ge=0)


class TeacherConfig(PoolFields):
    """Which model plays the agent."""

    provider: Annotated[str, AfterValidator(TEACHERS.check)] = Field(
        default="auto", description="auto = openai when OPENAI_API_KEY is set, else offline; or register_teacher's"
    )
    model: str = "gpt-4o"
    base_url: str | list[str] | None = Field(default=None, description="else OPENAI_BASE_URL, else OpenAI; a list: a pool")
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=1024, ge=16)
    concurrency: int = Field(default=8, ge=1, le=1024)
    max_retries: int = Field(default=5, ge=0, description="retries of 5xx, timeouts, dropped connections")
    timeout_s: float = Field(default=120.0, gt=0)
    rpm: int | None = Field(default=None, ge=1, description="requests per minute; null = learned from the endpoint")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute; null = learned from the endpoint")
    backoff_s: float = Field(default=1.0, gt=0, le=60, description="first retry wait; doubles, jittered, cap 60 s")
    breaker_s: float = Field(default=60.0, gt=0, description="stop resumably when nothing succeeded for this long")
    price: PriceConfig | None = Field(default=None, description="USD per 1M tokens; null = distill's table")
    mode: Literal["online", "batch"] = Field(default="online", description="batch: the Batch API in waves, half price")
    batch_poll_s: float = Field(default=60.0, gt=0, description="seconds between polls of batches in flight")
    service_tier: str | None = Field(default=None, description="sent as `service_tier` (flex: half price, slower)")
    batch_price: PriceConfig | None = Field(default=None, description="batch / flex USD per 1M tokens; null = half")

    def resolved_provider(self) -> str:
        """The provider actually used: `auto` picks openai when OPENAI_API_KEY is set."""
        if self.provider == "auto":
            return "openai" if os.environ.get("OPENAI_API_KEY") else "offline"
        return self.provider


class MixConfig(_Model):
    """Shares of conversation kinds; they must sum to 1."""

    tool: float = Field(default=0.7, ge=0, le=1)
    direct: float = Field(default=0.15, ge=0, le=1)
    multi_turn: float = Field(default=0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> MixConfig:
        total = self.tool + self.direct + self.multi_turn
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"tool + direct + multi_turn must sum to 1 (they sum to {total:g})")
        return self


class GenerationConfig(_Model):
    """How many conversations, of which kinds, from which seed."""

    conversations: int = Field(default=100, ge=1)
    seed: int = 0
    mix: MixConfig = Field(default_factory=MixConfig)
    follow_ups: int = Field(default=1, ge=1, le=5, description="extra turns in a multi_turn conversation")
    mix_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="a kind may fall short of its target by this x conversations"
    )
    max_extra_conversations: int | None = Field(
        default=None, ge=0, description="top-up budget for kinds short of the mix; null = conversations // 2"
    )
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="stop resumably before the next teacher request would pass this"
    )
    step_retries: int = Field(default=2, ge=0, le=10, description="asks a failed step again, new seed")
    reject_tool_errors: bool = Field(
        default=False, description="reject (reason tool_error) the conversations in which a tool call errored"
    )


class DedupConfig(_Model):
    """Deduplication before export (distill/dedup.py): exact and near-duplicate questions, identical tool calls."""

    enabled: bool = True
    near_threshold: float | None = Field(
        default=0.85, gt=0, lt=1, description="character-shingle Jaccard similarity; null = exact duplicates only"
    )
    shingle_chars: int = Field(default=5, ge=1, le=20, description="character n-gram size for near-duplicates")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations")
    trajectories: bool = Field(default=True, description="drop conversations with the same tool calls and inputs")


class ExportConfig(_Model):
    """The fine-tuning files: split and target model."""

    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    model: str = "gpt-4o-mini-2024-07-18"
    max_example_tokens: int | None = Field(default=None, ge=1, description="default: the model's limit")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    preferences: bool = Field(default=False, description="write preferences.*.jsonl (DPO pairs)")


class PublishConfig(_Model):
    """The dataset card of `distill publish`: license and extra tags (not part of the run's config hash)."""

    license: str = Field(
        default="unknown",
        pattern=r"^[a-z0-9][a-z0-9.+-]*$",
        description="a Hugging Face Hub license id, e.g. apache-2.0, cc-by-4.0, mit, other",
    )
    tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]] = Field(
        default_factory=list, description="added to synthetic, distillation, tool-use"
    )
    pretty_name: str | None = Field(default=None, description="the card's title (default: the config's name)")


class Config(_Model):
    """A whole distill config, as loaded from YAML."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run folder: outputs/<name>/")
    agent: AgentConfig = Field(default_factory=AgentConfig)
    tools: list[_ToolField] = Field(min_length=1)
    sources: list[SourceConfig] = Field(min_length=1)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)

    _path: Path | None = PrivateAttr(default=None)
    _tool_keys: list[str] = PrivateAttr(default_factory=list)  # the `tools[i]` entry each loaded tool came from

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for tool in tools:
            if not isinstance(tool, ToolSpec) or tool.name is None:  # checked once expanded (config load)
                continue
            if tool.name in seen:
                raise ValueError(f"tool name {tool.name!r} is used twice; tool names must be unique")
            seen.add(tool.name)
        return tools

    @property
    def path(self) -> Path | None:
        """The YAML file this config came from (None when built from a dict)."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against."""
        return self._path.parent if self._path else Path.cwd()

    def config_hash(self) -> str:
        """A stable hash of the validated config (what determines the run)."""
        dumped = self.model_dump(mode="json", exclude={"publish"})  # card settings do not change the data
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def tool(self, name: str) -> ToolSpec | None:
        """The configured tool called `name`, or None."""
        return next((t for t in self.tools if t.name == name), None)

    def tool_named(self, name: str) -> ToolSpec:
        """The configured tool called `name`; KeyError when there is none."""
        tool = self.tool(name)
        if tool is None:
            raise KeyError(f"no tool named {name!r} in the config")
        return tool


def _rebuild_tools_field() -> None:
    """A tool kind was registered: `tools:` entries now validate against the new union of kinds."""
    fields = Config.__pydantic_fields__
    fields["tools"] = FieldInfo.merge_field_infos(fields["tools"], annotation=list[tool_union()])  # type: ignore[misc]
    Config.model_rebuild(force=True)


on_tool_models_change(_rebuild_tools_field)


def _key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    previous: Any = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(previous, int) and item in tool_kinds():
            pass  # pydantic's discriminator tag, not a YAML key
        elif item.startswith(("function-", "union[")):
            pass
        else:
            parts.append(("." if parts else "") + item)
        previous = item
    return "".join(parts) or "(top level)"


def _explain(err: Any) -> tuple[str, str]:  # a pydantic ErrorDetails
    key = _key_path(tuple(err["loc"]))
    kind = err["type"]
    if kind == "extra_forbidden":
        return key, "unknown key; check its spelling against the config reference in README.md"
    if kind == "missing":
        return key, "is required"
    if kind == "union_tag_invalid":
        return key, f"unknown tool kind; use one of: {', '.join(tool_kinds())}"
    if kind == "union_tag_not_found":
        return key, f"missing 'kind'; use one of: {', '.join(tool_kinds())}"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    return key, msg


def config_from_dict(data: Any, *, file: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a parsed config mapping; errors name `file` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(file, None, "the top level must be a mapping of keys (name:, tools:, sources:, ...)")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        key, message = _explain(exc.errors()[0])
        more = len(exc.errors()) - 1
        raise ConfigError(file, key, message + (f" (and {more} more problem(s))" if more else "")) from None
    if base_dir is not None:
        config._path = base_dir / Path(file).name
    _expand_tools(config, file)
    _check_resources(config, file)
    return config


def _expand_tools(config: Config, file: str) -> None:
    """Replace each entry by the tools it stands for (an MCP server's listed tools); a name clash names both."""
    pairs = expand_entries(config.tools, config.base_dir, file)
    tools = [tool for _, tool in pairs]
    if len(tools) != len(config.tools) or any(a is not b for a, b in zip(tools, config.tools, strict=False)):
        config.tools = tools
    config._tool_keys = [key for key, _ in pairs]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and check a YAML config file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(str(file), None, "no such config file", hint="check the path")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(file), None, f"YAML syntax error at {where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), None, "is not UTF-8 text") from None
    return config_from_dict(data, file=str(file), base_dir=file.resolve().parent)


def resolve_source_path(config: Config, raw: str) -> Path:
    """A source path (file, folder or glob) made absolute against the config folder."""
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else config.base_dir / path


def _check_resources(config: Config, file: str) -> None:
    for i, source in enumerate(config.sources):
        if source.path is None:
            continue
        resolved = resolve_source_path(config, source.path)
        if any(ch in source.path for ch in "*?["):
            if not list(resolved.parent.glob(resolved.name)) and not list(
                Path(resolved.anchor).glob(str(resolved.relative_to(resolved.anchor)))
            ):
                raise ConfigError(file, f"sources[{i}].path", f"the glob {source.path!r} matches no file")
        elif not resolved.exists():
            raise ConfigError(
                file,
                f"sources[{i}].path",
                f"{source.path!r} does not exist (resolved to {resolved})",
                hint="paths are relative to the config file's folder",
            )
    for i, tool in enumerate(config.tools):
        key = config._tool_keys[i] if i < len(config._tool_keys) else f"tools[{i}]"
        if isinstance(tool, PythonTool):
            try:
                resolve_callable(tool.function, config.base_dir)
            except ImportError as exc:
                raise ConfigError(
                    file,
                    f"{key}.function",
                    f"cannot import {tool.function!r}: {exc}",
                    hint="make the module importable from the config's folder or install it",
                ) from None
        if config.agent.format == "openai-tools" and not _FUNCTION_NAME.fullmatch(tool.name):
            raise ConfigError(
                file,
                f"{key}.name",
                f"{tool.name!r} is not a valid function name for agent.format openai-tools",
                hint=f"use letters, digits, _ or - only, e.g. {re.sub(r'[^A-Za-z0-9_-]+', '_', tool.name)!r}",
            )
