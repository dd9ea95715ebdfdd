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
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.formats import Format, NotRenderable
from distill.generation.coverage import summarize_coverage
from distill.generation.dedup import drop_duplicates, line_key, summarize_duplicates
from distill.generation.judge import apply_verdicts
from distill.redact import redact, secret_values
from distill.run_folder import RunFolder, write_json, write_jsonl
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


def _simulated_counts(accepted: Sequence[Trajectory]) -> dict[str, Any]:
    """Observations written by the teacher for `kind: simulated` tools, in the exported conversations."""
    calls = Counter(s.action for t in accepted for turn in t.turns for s in turn.steps if s.simulated)
    return {
        "conversations": sum(1 for t in accepted if any(s.simulated for turn in t.turns for s in turn.steps)),
        "calls": sum(calls.values()),
        "by_tool": dict(calls.most_common()),
    }


def _tool_counts(trajectories: Sequence[Trajectory]) -> dict[str, dict[str, Any]]:
    """Calls and errors per tool over every recorded conversation; a warning names tools that error often."""
    counts: dict[str, dict[str, Any]] = {}
    for step in (s for t in trajectories for turn in t.turns for s in turn.steps if not s.is_final):
        row = counts.setdefault(step.action, {"calls": 0, "errors": 0})
        row["calls"] += 1
        row["errors"] += bool(step.tool_error)
    for name, row in counts.items():
        row["error_rate"] = round(row["errors"] / row["calls"], 3)
        if row["error_rate"] > TOOL_ERROR_WARN_RATE:
            log.warning("tool %r errored in %d of %d calls (%.0f%%); check it, or set generation.reject_tool_errors: "
                        "true to keep such conversations out of the data", name, row["errors"], row["calls"],
                        100 * row["error_rate"])
    return counts


def _resampling(config: Config, trajectories: Sequence[Trajectory], usage: Any) -> dict[str, Any]:
    """Step resampling's figures: steps recovered and given up (from the records), the re-asks' cost (stage
    `resample` in the run folder's ledger) and the dollars per accepted conversation."""
    steps = [s for t in trajectories for turn in t.turns for s in turn.steps if s.attempts]
    accepted = [t for t in trajectories if t.outcome == "accepted"]
    kept = [t for t in trajectories if t.meta.get("attempts")]  # given up, or a re-ask failed / was cut off
    gave_up = [t for t in kept if t.outcome == "rejected" and t.stage == "rollout"]
    run_folder = usage.get("run_folder", {}) if isinstance(usage, dict) else {}
    stage = run_folder.get("by_stage", {}).get("resample", {})
    total = run_folder.get("usd")
    return {
        "step_retries": config.generation.step_retries,
        "steps_recovered": len(steps),
        "conversations_recovered": sum(1 for t in accepted if any(s.attempts for turn in t.turns for s in turn.steps)),
        "steps_given_up": len(gave_up),
        "rejected_attempts": sum(len(s.attempts) for s in steps) + sum(len(t.meta["attempts"]) for t in kept),
        "resample_requests": stage.get("responses", 0) + stage.get("failed", 0) if run_folder else None,
        "resample_usd": stage.get("usd", 0.0) if total is not None else None,
        "usd": total,
        "usd_per_accepted_conversation": round(total / len(accepted), 6) if total is not None and accepted else None,
    }


def export_run(
    config: Config,
    run_dir: Path,
    trajectories: Sequence[Trajectory],
    fmt: Format,
    *,
    extra_manifest: dict[str, Any] | None = None,
    validation_documents: set[str] | None = None,
) -> ExportResult:
    """Render, token-check, split and write the run's dataset files and manifest."""
    model = config.export.model
    limit = config.export.max_example_tokens or example_limit(model)
    judged = apply_verdicts(config, trajectories)  # judge_<criterion> rejections from the stored verdicts
    lines: dict[str, list[tuple[dict[str, Any], int]]] = {}
    for t in trajectories:
        if t.outcome != "accepted":
            continue
        failed = next((s for turn in t.turns for s in turn.steps if s.tool_error), None)
        if failed is not None and config.generation.reject_tool_errors:
            detail = f"the {failed.action} call failed: {(failed.observation or '')[:200]}"
            t.reject("export", str(Reason.TOOL_ERROR), detail, None)
            continue
        try:
            examples = fmt.render(t)
        except NotRenderable as exc:  # e.g. parallel tool calls exported as langchain-chat
            t.reject("export", str(exc.reason), exc.detail, None)
            continue
        rendered = [(ex, count_example(ex, model)) for ex in examples]
        worst = max(n for _, n in rendered)
        if worst > limit:
            t.reject("export", str(Reason.OVER_TOKEN_LIMIT), f"{worst} tokens > {limit} ({model})", None)
            continue
        lines[t.id] = rendered
    duplicates = drop_duplicates(trajectories, config.export.dedup)  # rejected, stage export, reason duplicate_*
    accepted = [t for t in trajectories if t.outcome == "accepted"]
    per_doc = Counter(t.doc_id for t in accepted for _ in lines[t.id])
    validation_docs = (  # pinned by a focus round, so the eval's held-out documents stay held out
        validation_documents if validation_documents is not None
        else split_documents(dict(per_doc), config.export.validation_fraction, config.generation.seed)
    )

    train_rows: list[dict[str, Any]] = []
    val_rows: list[dict[str, Any]] = []
    train_tokens: list[int] = []
    val_tokens: list[int] = []
    seen: set[str] = set()  # no line twice in train + validation (two conversations may share a first turn)
    repeated: Counter[str] = Counter()
    for t in accepted:
        is_val = t.doc_id in validation_docs
        for example, n in lines[t.id]:
            key = line_key(example)
            if key in seen:
                repeated["validation" if is_val else "train"] += 1
                continue
            seen.add(key)
            (val_rows if is_val else train_rows).append(example)
            (val_tokens if is_val else train_tokens).append(n)

    paths = {name: RunFolder(run_dir).split(name) for name in ("train", "validation", "rejected")}
    write_jsonl(paths["train"], train_rows)
    write_jsonl(paths["validation"], val_rows)
    bad = [t for t in trajectories if t.outcome != "accepted"]
    write_jsonl(paths["rejected"], (_reject_row(t) for t in bad))

    outcomes = Counter(t.outcome for t in trajectories)
    epochs = default_epochs(len(train_rows))
    counts = {
        "conversations": {
            "requested": len(trajectories),
            "accepted": outcomes["accepted"],
            "rejected": outcomes["rejected"],
            "failed": outcomes["failed"],
        },
        "examples": {"train": len(train_rows), "validation": len(val_rows)},
    }
    teacher = trajectories[0].teacher if trajectories else {}
    manifest: dict[str, Any] = {
        "name": config.name,
        "config_hash": config.config_hash(),
        "agent_format": config.agent.format,
        "teacher": {**teacher, **({"note": OFFLINE_NOTE} if teacher.get("provider") == "offline" else {})},
        **counts,
        "rejects_by_reason": dict(Counter(t.reason for t in bad if t.outcome == "rejected").most_common()),
        "failures_by_reason": dict(Counter(t.reason for t in bad if t.outcome == "failed").most_common()),
        "rejects_by_stage": dict(Counter(t.stage for t in bad).most_common()),
        "accepted_by_kind": dict(Counter(t.kind for t in accepted).most_common()),
        "simulated_tools": _simulated_counts(accepted),
        "tools": _tool_counts(trajectories),
        "coverage": summarize_coverage(config, trajectories),
        "duplicates": {
            **summarize_duplicates(duplicates, config.export.dedup),
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
    if judged is not None:
        manifest["judge"] = judged
    if config.export.preferences:  # DPO pairs: rejected attempts next to accepted answers (same document split)
        from distill.generation.preferences import PREFERENCE_FILES, build_preferences

        pairs, manifest["preferences"] = build_preferences(accepted, fmt, validation_docs, model=model, limit=limit)
        for split, name in PREFERENCE_FILES.items():
            write_jsonl(run_dir / name, pairs[split])
    if extra_manifest:
        manifest.update(extra_manifest)
    manifest["resampling"] = _resampling(config, trajectories, manifest.get("teacher_usage"))
    manifest_path = RunFolder(run_dir).manifest
    write_json(manifest_path, manifest)
    return ExportResult(paths["train"], paths["validation"], paths["rejected"], manifest_path, counts)
