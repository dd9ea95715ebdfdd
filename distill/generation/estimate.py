"""`distill estimate`: run a small pilot and project tokens, dollars, acceptance and time for the full run.

The pilot is the first `pilot` planned conversations of the real run (same plans, same seeds, same requests), run
into the run folder with the real teacher, without top-up. Its answers go to the ledger, so the full run that follows
(`distill generate` on the same folder) resumes after the pilot and pays nothing twice; rerunning the estimate
replays the pilot from the ledger for free. The projection scales what the pilot's conversations consumed (requests
and tokens per conversation, whether paid now or replayed) to `generation.conversations`, prices it with the
teacher's price, and times it by the binding limit: `teacher.concurrency` / mean latency, the requests-per-minute
limit (configured, announced in headers, or learned from 429s) or the tokens-per-minute limit. The pilot always runs
online (a batch pilot could wait a day); the projection also shows the batch / flex price (half).

A run folder that holds a finished full run is not estimated into: the pilot would replace its dataset files with
the pilot's few examples. `force=True` (`--force`) does it anyway (the ledger keeps every answer, so a later
`distill generate` rebuilds the full run without paying again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.run_folder import default_run_dir, read_manifest
from distill.teachers.costs import BATCH_DISCOUNT

__all__ = ["Estimate", "estimate"]


@dataclass
class Estimate:
    """The pilot's figures and the projection for `generation.conversations`."""

    run_dir: Path
    teacher: dict[str, Any]
    conversations: int
    pilot: dict[str, int]
    acceptance_rate: float | None
    per_conversation: dict[str, float | None]
    projected: dict[str, Any]
    spent_usd: float | None
    limits: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        """A human-readable report."""
        p, per, proj = self.pilot, self.per_conversation, self.projected
        lines = [
            (
                f"pilot: {p['requested']} conversation(s) with {self.teacher.get('model')} "
                f"({p['accepted']} accepted, {p['rejected']} rejected, {p['failed']} failed) in {self.run_dir}/"
            ),
            (
                f"per conversation: {per['requests']:.2f} requests, {per['input_tokens']:,.0f} input tokens "
                f"({per['cached_input_tokens']:,.0f} cached), {per['output_tokens']:,.0f} output tokens, "
                f"{_money(per['usd'])}"
            ),
            (
                f"projected for {self.conversations:,} conversations: {proj['requests']:,} requests, "
                f"{proj['input_tokens']:,} input + {proj['output_tokens']:,} output tokens, {_money(proj['usd'])}, "
                f"about {_duration(proj['seconds'])} ({proj['bound_by']})"
            ),
        ]
        if proj.get("batch_usd") is not None and proj.get("usd"):
            lines.append(f"at batch or flex prices: {_money(proj['batch_usd'])} (teacher.mode: batch, one 24 h window "
                         "per agent step at worst; or teacher.service_tier: flex)")
        if self.acceptance_rate is not None:
            lines.append(
                f"acceptance: {self.acceptance_rate:.0%} -> about {proj['accepted']:,} accepted conversations "
                f"before top-up; top-up may add up to {proj['top_up_conversations']:,} conversations "
                f"({_money(proj['top_up_usd'])} more)"
            )
        if self.spent_usd is not None:
            lines.append(f"spent so far on this run folder: {_money(self.spent_usd)}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _money(value: float | None) -> str:
    return f"${value:,.2f}" if value is not None else "unknown (no price: set teacher.price)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(
    config: Config, out: str | Path | None = None, *, pilot: int = 10, progress: bool = True, force: bool = False
) -> Estimate:
    """Run a pilot of `pilot` conversations in the run folder and project the full run."""
    from distill.generation.pipeline import generate
    from distill.generation.top_up import extra_budget

    if not force:
        _refuse_full_run(Path(out) if out is not None else default_run_dir(config))
    size = max(1, min(pilot, config.generation.conversations))
    online = config.teacher.mode == "online" and config.teacher.service_tier != "flex"
    if not online:  # the pilot runs online and at once (priced online); the projection shows the batch price too
        path = config.path
        teacher = config.teacher.model_copy(update={"mode": "online", "service_tier": None})
        config = config.model_copy(update={"teacher": teacher})
        config._path = path
    result = generate(config, out, progress=progress, fresh=True, pilot=size)
    manifest = read_manifest(result.run_dir).as_dict()
    counts = result.conversations
    usage = manifest.get("teacher_usage") or {}
    consumed = (usage.get("this_invocation") or {}).get("consumed_by_stage", {})
    priced = usage.get("price_usd_per_1m_tokens") is not None
    totals = {k: sum(s.get(k, 0) for s in consumed.values()) for k in
              ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "usd")}
    n = counts["requested"] or 1
    per = {k: totals[k] / n for k in totals}
    offline = not usage  # the offline teacher: no request, no cost
    per["usd"] = per["usd"] if priced or offline else None
    total = config.generation.conversations
    seconds, bound = _time(config, per, usage, manifest)
    if offline:
        seconds, bound = None, "the offline teacher waits for no endpoint"
    extra = extra_budget(config)
    notes: list[str] = []
    if offline:
        notes.append("the offline teacher costs nothing and needs no estimate; set OPENAI_API_KEY for a real one")
    elif not totals["requests"]:
        notes.append("the pilot sent no request (every conversation failed before its first answer)")
    notes.append(f"`distill generate` on the same run folder resumes after the pilot ({size} conversations)")
    return Estimate(
        run_dir=result.run_dir,
        teacher=manifest.get("teacher", {}),
        conversations=total,
        pilot=dict(counts),
        acceptance_rate=counts["accepted"] / n if counts["requested"] else None,
        per_conversation=per,
        projected={
            "requests": math.ceil(per["requests"] * total),
            "input_tokens": math.ceil(per["input_tokens"] * total),
            "cached_input_tokens": math.ceil(per["cached_input_tokens"] * total),
            "output_tokens": math.ceil(per["output_tokens"] * total),
            "usd": round(per["usd"] * total, 4) if per["usd"] is not None else None,
            "seconds": round(seconds * total / n, 1) if seconds is not None else None,
            "bound_by": bound,
            "accepted": round(counts["accepted"] / n * total),
            "top_up_conversations": extra,
            "top_up_usd": round(per["usd"] * extra, 4) if per["usd"] is not None else None,
            "batch_usd": round(per["usd"] * total * BATCH_DISCOUNT, 4) if per["usd"] is not None else None,
        },
        spent_usd=(usage.get("run_folder") or {}).get("usd") if priced else (0.0 if offline else None),
        limits=usage.get("limits", {}),
        notes=notes,
    )


def _refuse_full_run(run_dir: Path) -> None:
    """Raise when `run_dir` holds a finished full run, whose dataset a pilot would replace."""
    from distill.errors import DistillError, RunFolderError

    try:
        manifest = read_manifest(run_dir).as_dict()
    except RunFolderError:  # no manifest (a new folder), or one that is not a finished run's
        return
    if not isinstance(manifest, dict) or "pilot" in (manifest.get("top_up") or {}):
        return
    examples = manifest.get("examples") or {}
    raise DistillError(
        f"{run_dir} holds a full run ({(manifest.get('conversations') or {}).get('requested', '?')} conversations, "
        f"{examples.get('train', '?')} train + {examples.get('validation', '?')} validation examples); "
        "an estimate would replace its dataset with the pilot's",
        hint="give the estimate another --out, or pass --force (the ledger keeps every answer: "
        "`distill generate` rebuilds the full run for free)",
    )


def _time(config: Config, per: dict[str, Any], usage: dict[str, Any], manifest: dict[str, Any]) -> tuple[Any, str]:
    """Seconds the pilot's `n` conversations take at full speed, and what bounds the speed."""
    n = manifest["conversations"]["requested"] or 1
    requests = per["requests"] * n
    stages = (usage.get("run_folder") or {}).get("by_stage", {})
    latencies = [(s["mean_latency_s"], s["responses"]) for s in stages.values() if s.get("mean_latency_s")]
    weight = sum(w for _, w in latencies)
    latency = sum(v * w for v, w in latencies) / weight if weight else None
    if not requests or latency is None:
        return None, "unknown: no answered request"
    rates = {"teacher.concurrency / mean latency": config.teacher.concurrency / latency}
    limits = usage.get("limits") or {}
    if limits.get("rpm_in_force"):
        rates["the requests-per-minute limit"] = limits["rpm_in_force"] / 60
    tpm = min((v for v in (limits.get("tpm_configured"), limits.get("tpm_from_headers")) if v), default=None)
    if tpm and per["requests"]:
        tokens = per["input_tokens"] / per["requests"] + config.teacher.max_tokens
        rates["the tokens-per-minute limit"] = tpm / 60 / tokens
    bound = min(rates, key=rates.get)  # type: ignore[arg-type]
    return requests / rates[bound], f"bound by {bound}; mean latency {latency:.2f} s"
