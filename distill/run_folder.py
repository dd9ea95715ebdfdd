"""The run folder, the backbone between the stages: every path in it, atomic writes, JSONL read and append, the typed
manifest and the config it records.

A run folder (`outputs/<name>/` by default) holds `index/` (the BM25 files and `chunks.jsonl`), `plans.jsonl`,
`run.json` (the resume fingerprint), `trajectories.jsonl`, `ledger.sqlite` (every paid answer), the dataset files
`train.jsonl` / `validation.jsonl` / `rejected.jsonl`, `manifest.json`, and what later commands add: `report.html` /
`report.json`, `eval/`, `finetune.json`; a shard (`distill generate --shard I/N`) adds `shard.json`, a merge of shards
`merged.json`, a Ray run the shard folders under `shards/`. Every module names these files through `RunFolder` and
writes them with `write_text` / `write_jsonl` (distill/atomic_files.py: a temp file in the same folder, fsync,
replace; on any error the old file stays as it was and the error is a `RunFolderError` naming the file and the fix).

`read_jsonl` reads a JSONL file line by line; a last line cut short (a kill -9 in the middle of a write) is left out
and reported with its file and line, as `generate` does when it resumes; a bad line anywhere else is an error naming
the file and the line. `read_manifest` gives the typed `Manifest`; `config_of` the config it records, or an error that
says it no longer validates and how to fix that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.atomic_files import (  # re-exported: the run folder is written through them
    Appender,
    output_folder,
    write_json,
    write_jsonl,
    write_lines,
    write_text,
)
from distill.errors import RunFolderError

if TYPE_CHECKING:
    from distill.config import Config
    from distill.trajectory import Trajectory

__all__ = [
    "CHUNKS", "EVAL", "EXPORT_SPOOL", "FINETUNE", "INDEX", "LEDGER", "MANIFEST", "MERGED", "PARTS", "PLANS",
    "REJECTED", "REPORT_HTML", "REPORT_JSON", "RUN_STATE", "SHARD", "SHARDS", "SPLITS", "TRAIN", "TRAJECTORIES",
    "VALIDATION", "Appender",
    "Manifest", "RunFolder", "config_of", "default_run_dir", "iter_jsonl", "iter_trajectories", "load_trajectories",
    "output_folder", "read_jsonl", "read_manifest", "write_json", "write_jsonl", "write_lines", "write_text",
]

log = logging.getLogger(__name__)

INDEX = "index"  # a folder: the bm25s files and CHUNKS
CHUNKS = "chunks.jsonl"
PLANS = "plans.jsonl"
RUN_STATE = "run.json"
TRAJECTORIES = "trajectories.jsonl"
LEDGER = "ledger.sqlite"
TRAIN = "train.jsonl"
VALIDATION = "validation.jsonl"
REJECTED = "rejected.jsonl"
MANIFEST = "manifest.json"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
EVAL = "eval"  # a folder: report.json, report.md, transcripts/, failures/
FINETUNE = "finetune.json"
PARTS = "trajectories.parts.jsonl"  # while a run runs: conversations as they finish (removed at the end)
EXPORT_SPOOL = "export.spool"  # while export runs: its rendered lines between its two passes (removed at the end)
SHARD, MERGED, SHARDS = "shard.json", "merged.json", "shards"  # a finished shard; a merge of shards; Ray's shard folders
SPLITS = ("train", "validation")
GENERATE_FIRST = "run `distill generate CONFIG` first"
T = TypeVar("T")


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # the paths, by what they hold
    @property
    def index(self) -> Path: return self.root / INDEX
    @property
    def chunks(self) -> Path: return self.root / INDEX / CHUNKS
    @property
    def plans(self) -> Path: return self.root / PLANS
    @property
    def run_state(self) -> Path: return self.root / RUN_STATE
    @property
    def trajectories(self) -> Path: return self.root / TRAJECTORIES
    @property
    def ledger(self) -> Path: return self.root / LEDGER
    @property
    def train(self) -> Path: return self.root / TRAIN
    @property
    def validation(self) -> Path: return self.root / VALIDATION
    @property
    def rejected(self) -> Path: return self.root / REJECTED
    @property
    def manifest(self) -> Path: return self.root / MANIFEST
    @property
    def report_html(self) -> Path: return self.root / REPORT_HTML
    @property
    def report_json(self) -> Path: return self.root / REPORT_JSON
    @property
    def eval(self) -> Path: return self.root / EVAL
    @property
    def finetune(self) -> Path: return self.root / FINETUNE
    @property
    def parts(self) -> Path: return self.root / PARTS
    @property
    def export_spool(self) -> Path: return self.root / EXPORT_SPOOL
    @property
    def shard(self) -> Path: return self.root / SHARD
    @property
    def merged(self) -> Path: return self.root / MERGED
    @property
    def shards(self) -> Path: return self.root / SHARDS
    def split(self, name: str) -> Path:
        """`train.jsonl`, `validation.jsonl` or `rejected.jsonl`."""
        return self.root / f"{name}.jsonl"

    def preference_split(self, name: str) -> Path:
        """`preferences.train.jsonl` or `preferences.validation.jsonl` (export.preferences)."""
        return self.root / f"preferences.{name}.jsonl"

    def require(self, path: Path, hint: str = GENERATE_FIRST, *, purpose: str = "") -> Path:
        """`path` when it is a file, else a RunFolderError saying the run folder lacks it."""
        if not path.is_file():
            raise RunFolderError(f"{self.root} has no {path.relative_to(self.root)}{purpose}", hint=hint)
        return path


def default_run_dir(config: Config) -> Path:
    """outputs/<name>/ under the current directory."""
    return Path("outputs") / config.name


# -- reading ----------------------------------------------------------------------------------------------------------


def read_jsonl(path: Path, parse: Callable[[str], T] = json.loads, *, hint: str | None = None) -> list[T]:
    """The parsed lines of a JSONL file ([] when it does not exist), blank lines skipped (see `iter_jsonl`)."""
    return list(iter_jsonl(path, parse, hint=hint))


def iter_jsonl(path: Path, parse: Callable[[str], T] = json.loads, *, hint: str | None = None) -> Iterator[T]:
    """The parsed lines of a JSONL file, one at a time (none when it does not exist), blank lines skipped.

    A last line that does not parse is a line cut short by an interrupted write: it is left out and reported (file
    and line) as a warning. A bad line before it is a RunFolderError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return
    bad: tuple[int, str] | None = None  # the last line that did not parse: cut short if nothing follows it
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if bad is not None:
                    raise RunFolderError(f"{path}:{bad[0]}: not a valid line: {bad[1]}", hint=hint)
                try:
                    row = parse(line)
                except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
                    bad = (number, (str(exc).strip().splitlines() or [""])[0][:200])
                    continue
                yield row
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"cannot read {path}: {exc}", hint=hint) from None
    if bad is not None:
        log.warning("%s:%d: the last line is cut short (an interrupted write); it is left out", path, bad[0])


def load_trajectories(run_dir: Path) -> list[Trajectory]:
    """The rollout stage's artifact of a run folder (`trajectories.jsonl`); `iter_trajectories` one at a time."""
    return list(iter_trajectories(run_dir))


def iter_trajectories(run_dir: Path) -> Iterator[Trajectory]:
    from distill.trajectory import Trajectory
    folder = RunFolder(run_dir)
    path = folder.require(folder.trajectories)
    return iter_jsonl(path, Trajectory.model_validate_json, hint="`distill generate CONFIG --out RUN` rewrites it")


# -- the manifest ------------------------------------------------------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ManifestSplit(_Open):
    """How the examples were split: by source document."""

    by: str = "source document"
    validation_documents: list[str] = Field(default_factory=list)
    train_documents: int = 0


class ManifestTokens(_Open):
    """The target model, its per-example limit and the token statistics of each split."""

    model: str | None = None
    example_limit: int | None = None
    train: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None


class Manifest(_Open):
    """`manifest.json`: the keys distill reads are typed; the rest (coverage, costs, timing, ...) stays open."""

    name: str | None = None
    config_hash: str | None = None
    agent_format: str | None = None
    teacher: dict[str, Any] = Field(default_factory=dict)
    conversations: dict[str, int] = Field(default_factory=dict)
    examples: dict[str, int] = Field(default_factory=dict)
    split: ManifestSplit = Field(default_factory=ManifestSplit)
    tokens: ManifestTokens = Field(default_factory=ManifestTokens)
    files: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] | None = None

    def file(self, run_dir: Path, name: str) -> Path:
        """The path of the dataset file `name` (train, validation, rejected) as the manifest lists it."""
        return Path(run_dir) / self.files.get(name, f"{name}.jsonl")

    def as_dict(self) -> dict[str, Any]:
        """Every key, as read."""
        return self.model_dump(mode="json", exclude_unset=True)


_MANIFEST_FIX = "rewrite it from the run's trajectories with `distill export CONFIG --run RUN`"


def read_manifest(run_dir: Path, *, purpose: str = "") -> Manifest:
    """The run's manifest; a missing, unreadable or malformed one is a RunFolderError naming the file and the fix."""
    folder = RunFolder(run_dir)
    path = folder.require(folder.manifest, purpose=purpose)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"cannot read {path}: {exc}", hint=_MANIFEST_FIX) from None
    except ValueError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc})", hint=_MANIFEST_FIX) from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a JSON object", hint=_MANIFEST_FIX)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise RunFolderError(f"{path}: {_first_problem(exc)}", hint=_MANIFEST_FIX) from None


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = len(exc.errors()) - 1
    return f"{key}: {err['msg']}" + (f" (and {more} more problem(s))" if more else "")


def config_of(manifest: Manifest, run_dir: Path) -> Config | None:
    """The config recorded in the run's manifest (None when it records none); a recorded config that no longer
    validates (e.g. written by another distill version) is a RunFolderError that says so and names the fix."""
    from distill.config import Config

    if manifest.config is None:
        return None
    try:
        return Config.model_validate(manifest.config)
    except ValidationError as exc:
        raise RunFolderError(
            f"{RunFolder(run_dir).manifest}: the recorded config no longer validates: config.{_first_problem(exc)}",
            hint="re-export the run with a current config (`distill export CONFIG --run RUN`), which records it again",
        ) from None
