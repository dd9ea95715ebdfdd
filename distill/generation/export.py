"""Export: trajectories -> OpenAI fine-tuning JSONL (train / validation split by source document), rejects, manifest.

Reads the rollout stage's trajectories, renders the accepted ones with the agent format (a trajectory the format
cannot express, e.g. parallel tool calls as langchain-chat, is rejected as `format_dependent`), rejects examples over
the target model's per-example token limit, splits by source document (no document feeds both files), leaves out a line
already written (two multi-turn conversations may share their first turn: `duplicates.lines` in the manifest counts
them) and writes `train.jsonl`, `validation.jsonl`, `rejected.jsonl` and `manifest.json` (distill/run_folder.py). It makes no teacher call, so it can be
rerun at will on a run folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.formats import Format, NotRenderable
from distill.generation.coverage import Coverage
from distill.generation.dedup import DedupIndex, line_key, summarize_duplicates
from distill.generation.judge import Verdicts
from distill.redact import redact, secret_values
from distill.run_folder import RunFolder, write_json, write_jsonl, write_lines
from distill.tokens import count_example, default_epochs, example_limit, token_stats
from distill.trajectory import Reason, Trajectory

__all__ = ["ExportResult", "export_run", "split_documents"]

TOOL_ERROR_WARN_RATE = 0.2  # a tool whose calls error more often than this is named in a warning
log = logging.getLogger(__name__)
OFFLINE_NOTE = (
    "Written by distill's offline deterministic teacher (no language model): a grounded stand-in for running the "
    "pipeline without an API key. Use a real teacher (teacher.provider: openai) for data worth training on."
)


@dataclass
class ExportResult:
    """Where the files are and what they hold."""

    train: Path
    validation: Path
    rejected: Path
    manifest: Path
    counts: dict[str, Any]
    documents: int = 0  # source documents of the accepted conversations


def split_documents(counts: dict[str, int], fraction: float, seed: int) -> set[str]:
    """Documents for the validation split: a seeded order, filled until `fraction` of the examples is reached."""
    if fraction <= 0 or len(counts) < 2:
        return set()
    total = sum(counts.values())
    order = sorted(counts, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
    chosen: set[str] = set()
    taken = 0
    for doc in order:
        if taken >= fraction * total or len(chosen) == len(counts) - 1:
            break
        chosen.add(doc)
        taken += counts[doc]
    return chosen


def _reject_row(t: Trajectory) -> dict[str, Any]:
    return {
        "id": t.id,
        "outcome": t.outcome,
        "stage": t.stage,
        "reason": t.reason,
        "detail": t.detail,
        "raw": t.raw,
        "kind": t.kind,
        "doc_id": t.doc_id,
        "chunk_id": t.chunk_id,
        "turns": [turn.model_dump() for turn in t.turns],
        **({"attempts": t.meta["attempts"]} if t.meta.get("attempts") else {}),  # resampling gave up at a step
    }


class _Tally:
    """The manifest's per-conversation figures (outcomes, reasons, tools, simulated tools, resampling), counted one
    conversation at a time with its final outcome."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.rejects: Counter[str | None] = Counter()
        self.failures: Counter[str | None] = Counter()
        self.stages: Counter[str | None] = Counter()
        self.kinds: Counter[str] = Counter()
        self.simulated: Counter[str] = Counter()
        self.simulated_conversations = 0
        self.tools: dict[str, dict[str, Any]] = {}
        self.resampled = {"steps": 0, "recovered": 0, "given_up": 0, "attempts": 0}
        self.teacher: dict[str, Any] | None = None

    def add(self, t: Trajectory) -> None:
        if self.teacher is None:
            self.teacher = t.teacher
        self.outcomes[t.outcome] += 1
        steps = [s for turn in t.turns for s in turn.steps]
        for step in steps:
            if not step.is_final:
                row = self.tools.setdefault(step.action, {"calls": 0, "errors": 0})
                row["calls"] += 1
                row["errors"] += bool(step.tool_error)
        retried = [s for s in steps if s.attempts]
        kept = t.meta.get("attempts")  # given up, or a re-ask failed / was cut off
        self.resampled["steps"] += len(retried)
        self.resampled["attempts"] += sum(len(s.attempts) for s in retried) + (len(kept) if kept else 0)
        if t.outcome == "accepted":
            self.kinds[t.kind] += 1
            self.resampled["recovered"] += bool(retried)
            calls = [s.action for s in steps if s.simulated]
            self.simulated.update(calls)
            self.simulated_conversations += bool(calls)
            return
        if t.outcome in ("rejected", "failed"):
            (self.rejects if t.outcome == "rejected" else self.failures)[t.reason] += 1
        self.stages[t.stage] += 1
        self.resampled["given_up"] += bool(kept) and t.outcome == "rejected" and t.stage == "rollout"

    def tool_counts(self) -> dict[str, dict[str, Any]]:
        """Calls and errors per tool over every recorded conversation; a warning names tools that error often."""
        for name, row in self.tools.items():
            row["error_rate"] = round(row["errors"] / row["calls"], 3)
            if row["error_rate"] > TOOL_ERROR_WARN_RATE:
                log.warning("tool %r errored in %d of %d calls (%.0f%%); check it, or set generation.reject_tool_errors: "
                            "true to keep such conversations out of the data", name, row["errors"], row["calls"],
                            100 * row["error_rate"])
        return self.tools

    def resampling(self, config: Config, usage: Any) -> dict[str, Any]:
        """Step resampling's figures: steps recovered and given up (from the records), the re-asks' cost (stage
        `resample` in the run folder's ledger) and the dollars per accepted conversation."""
        run_folder = usage.get("run_folder", {}) if isinstance(usage, dict) else {}
        stage = run_folder.get("by_stage", {}).get("resample", {})
        total = run_folder.get("usd")
        accepted = self.outcomes["accepted"]
        return {
            "step_retries": config.generation.step_retries,
            "steps_recovered": self.resampled["steps"],
            "conversations_recovered": self.resampled["recovered"],
            "steps_given_up": self.resampled["given_up"],
            "rejected_attempts": self.resampled["attempts"],
            "resample_requests": stage.get("responses", 0) + stage.get("failed", 0) if run_folder else None,
            "resample_usd": stage.get("usd", 0.0) if total is not None else None,
            "usd": total,
            "usd_per_accepted_conversation": round(total / accepted, 6) if total is not None and accepted else None,
        }


Source = Sequence[Trajectory] | Callable[[], Iterable[Trajectory]]


def _reader(trajectories: Source) -> Callable[[], Iterable[Trajectory]]:
    return trajectories if callable(trajectories) else (lambda: trajectories)


def export_run(
    config: Config,
    run_dir: Path,
    trajectories: Source,
    fmt: Format,
    *,
    extra_manifest: dict[str, Any] | None = None,
    validation_documents: set[str] | None = None,
) -> ExportResult:
    """Render, token-check, split and write the run's dataset files and manifest.

    `trajectories` is a sequence, or a function that reads them afresh (e.g. from `trajectories.jsonl`): export
    streams them twice and holds none. The first pass applies the judge's verdicts, renders, token-checks and
    deduplicates, writing the rendered lines of the kept conversations to a spool file; the second applies the
    same verdicts again and writes the files (rejects in conversation order, lines in the split by document)."""
    read = _reader(trajectories)
    model = config.export.model
    limit = config.export.max_example_tokens or example_limit(model)
    folder = RunFolder(run_dir)
    verdicts = Verdicts(config)  # judge_<criterion> rejections from the stored verdicts
    dedup = DedupIndex(config.export.dedup)
    per_doc: Counter[str] = Counter()
    spool_path = folder.export_spool
    with spool_path.open("wb") as spool:
        for t in read():
            verdicts.apply(t)
            if t.outcome != "accepted":
                continue
            rejected = _export_check(config, t, fmt, model, limit)
            if not isinstance(rejected, tuple) and (dup := dedup.check(t)) is not None:
                rejected = (dup.reason, dup.detail())
            if isinstance(rejected, tuple):  # export's verdict, read back in the second pass (held nowhere)
                spool.write(b"R" + json.dumps(rejected, ensure_ascii=False).encode() + b"\n")
                continue
            per_doc[t.doc_id] += len(rendered := rejected)
            spool.write(f"{len(rendered)}\n".encode())
            for example, n in rendered:
                text = json.dumps(example, ensure_ascii=False)
                key = hashlib.blake2b(line_key(example).encode(), digest_size=16).hexdigest()
                spool.write(f"{n}\t{key}\t{text}\n".encode())
    validation_docs = (  # pinned by a focus round, so the eval's held-out documents stay held out
        validation_documents if validation_documents is not None
        else split_documents(dict(per_doc), config.export.validation_fraction, config.generation.seed)
    )

    paths = {name: folder.split(name) for name in ("train", "validation", "rejected")}
    parts = {name: paths[name].with_name(paths[name].name + ".part") for name in paths}
    tokens: dict[str, list[int]] = {"train": [], "validation": []}
    seen: set[str] = set()  # no line twice in train + validation (two conversations may share a first turn)
    repeated: Counter[str] = Counter()
    tally, coverage = _Tally(), Coverage(config)
    pairs_wanted = config.export.preferences
    dropped: set[str] = set()  # ids export's checks rejected, for the preference pass (only when pairs are wanted)
    try:
        with spool_path.open("rb") as spool, parts["train"].open("wb") as train, \
                parts["validation"].open("wb") as val, parts["rejected"].open("wb") as bad:
            for t in read():
                verdicts.apply(t, count=False)
                head = spool.readline() if t.outcome == "accepted" else b""
                if head.startswith(b"R"):  # rejected by export's checks in the first pass
                    reason, detail = json.loads(head[1:])
                    t.reject("export", reason, detail, None)
                    if pairs_wanted:
                        dropped.add(t.id)
                tally.add(t)
                coverage.add(t)
                if t.outcome != "accepted":
                    bad.write((json.dumps(_reject_row(t), ensure_ascii=False) + "\n").encode("utf-8"))
                    continue
                split = "validation" if t.doc_id in validation_docs else "train"
                for _ in range(int(head)):
                    n, key, text = spool.readline().decode("utf-8").split("\t", 2)
                    if key in seen:
                        repeated[split] += 1
                        continue
                    seen.add(key)
                    (val if split == "validation" else train).write(text.encode("utf-8"))
                    tokens[split].append(int(n))
        for name, path in paths.items():
            write_lines(path, _blocks(parts[name]))
    finally:
        for part in (*parts.values(), spool_path):
            part.unlink(missing_ok=True)

    train_tokens, val_tokens = tokens["train"], tokens["validation"]
    outcomes = tally.outcomes
    epochs = default_epochs(len(train_tokens))
    counts = {
        "conversations": {
            "requested": sum(outcomes.values()),
            "accepted": outcomes["accepted"],
            "rejected": outcomes["rejected"],
            "failed": outcomes["failed"],
        },
        "examples": {"train": len(train_tokens), "validation": len(val_tokens)},
    }
    teacher = tally.teacher or {}
    manifest: dict[str, Any] = {
        "name": config.name,
        "config_hash": config.config_hash(),
        "agent_format": config.agent.format,
        "teacher": {**teacher, **({"note": OFFLINE_NOTE} if teacher.get("provider") == "offline" else {})},
        **counts,
        "rejects_by_reason": dict(tally.rejects.most_common()),
        "failures_by_reason": dict(tally.failures.most_common()),
        "rejects_by_stage": dict(tally.stages.most_common()),
        "accepted_by_kind": dict(tally.kinds.most_common()),
        "simulated_tools": {
            "conversations": tally.simulated_conversations,
            "calls": sum(tally.simulated.values()),
            "by_tool": dict(tally.simulated.most_common()),
        },
        "tools": tally.tool_counts(),
        "coverage": coverage.section(),
        "duplicates": {
            **summarize_duplicates(dedup.found, config.export.dedup),
            "lines": {"dropped": sum(repeated.values()), "by_split": {s: repeated[s] for s in ("train", "validation")}},
        },
        "split": {
            "by": "source document",
            "validation_documents": sorted(validation_docs),
            "train_documents": len(set(per_doc) - validation_docs),
        },
        "tokens": {
            "model": model,
            "example_limit": limit,
            "train": token_stats(train_tokens),
            "validation": token_stats(val_tokens),
        },
        "fine_tuning_estimate": {
            "model": model,
            "training_tokens": sum(train_tokens),
            "epochs": epochs,
            "billed_tokens": sum(train_tokens) * epochs,
            "rule": "OpenAI default epochs: 3, raised to min(25, 100 // n) when n*3 < 100, "
            "lowered to max(1, 25000 // n) when n*3 > 25000",
        },
        "files": {k: p.name for k, p in paths.items()},
        "config": redact(config.model_dump(mode="json"), secret_values([])),  # no credentials in base_url
    }
    judged = verdicts.section()
    if judged is not None:
        manifest["judge"] = judged
    if pairs_wanted:  # DPO pairs: rejected attempts next to accepted answers (same document split)
        from distill.generation.preferences import PREFERENCE_FILES, build_preferences

        pairs, manifest["preferences"] = build_preferences(
            _final(read, verdicts, dropped), fmt, validation_docs, model=model, limit=limit)
        for split, name in PREFERENCE_FILES.items():
            write_jsonl(run_dir / name, pairs[split])
    if extra_manifest:
        manifest.update(extra_manifest)
    manifest["resampling"] = tally.resampling(config, manifest.get("teacher_usage"))
    manifest_path = folder.manifest
    write_json(manifest_path, manifest)
    documents = len({d for d, n in per_doc.items() if n})
    return ExportResult(paths["train"], paths["validation"], paths["rejected"], manifest_path, counts, documents)


def _export_check(config: Config, t: Trajectory, fmt: Format, model: str, limit: int) -> Any:
    """(reason, detail) when export rejects `t` (a failed tool call, not renderable, over the token limit), else its
    rendered examples with their token counts."""
    failed = next((s for turn in t.turns for s in turn.steps if s.tool_error), None)
    if failed is not None and config.generation.reject_tool_errors:
        return str(Reason.TOOL_ERROR), f"the {failed.action} call failed: {(failed.observation or '')[:200]}"
    try:
        examples = fmt.render(t)
    except NotRenderable as exc:  # e.g. parallel tool calls exported as langchain-chat
        return str(exc.reason), exc.detail
    rendered = [(ex, count_example(ex, model)) for ex in examples]
    worst = max(n for _, n in rendered)
    if worst > limit:
        return str(Reason.OVER_TOKEN_LIMIT), f"{worst} tokens > {limit} ({model})"
    return rendered


def _final(read: Callable[[], Iterable[Trajectory]], verdicts: Verdicts, dropped: set[str]) -> Iterator[Trajectory]:
    """The conversations accepted in the end (a third pass, for the preference pairs): not rejected by the judge's
    thresholds, nor in `dropped` by export's checks."""
    for t in read():
        verdicts.apply(t, count=False)
        if t.outcome == "accepted" and t.id not in dropped:
            yield t


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            yield block
