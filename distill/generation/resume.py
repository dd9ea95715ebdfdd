"""Resume: a run folder's finished conversations, its ledger and meter, and how a stopped run says how to go on.

`RunSession.open` is called by `generate` once the plans are fixed. It reads `run.json` (the fingerprint of what
determines the conversations: distill's version, the config without its speed, budget and export keys, the plans
and the chunk texts), the previous `plans.jsonl` and `trajectories.jsonl`, then writes the new plans. When the
fingerprint matches, the accepted and rejected conversations found there are kept and not run again, each only if
the plan it was made for is the plan asked now: the extra plans of a top-up depend on earlier outcomes, so after a
resume that changed outcomes (failures that now succeed) the same id may be planned as another kind, and is run
again. Failed ones (no teacher answer after the retries) are dropped and tried again, and a last line cut short by
a kill -9 is dropped. Extra plans are added to `plans.jsonl` (`add_plans`) before they are rolled out, so that every
finished conversation's plan is on disk. When it does not match (or with `fresh`), every conversation runs again; the
ledger still answers every request it holds, so nothing already paid is paid again.

A teacher that pays for its answers (a `RunTeacher`: it has `use_run`) gets the run folder's ledger (`ledger.sqlite`) and a `Meter`
(distill/costs.py), and while the rollouts run each finished conversation is appended to `trajectories.jsonl` with
one `write` (O_APPEND), so an interrupted run never loses a finished conversation and never writes one twice. A
teacher without a ledger (the offline one) costs nothing: its runs are always recomputed, nothing is appended. Every
finished conversation (resumed, or run now) also goes to the run's spool (`trajectories.parts.jsonl`,
distill/generation/spool.py) and only its offset stays in memory; at the end trajectories.jsonl is rewritten in plan
order from it, byte for byte the records. When the engine stops the run (circuit breaker, budget), the
workers stop taking conversations, the requests in flight finish and are stored, and `check_stopped` raises one
`RunStopped` that says what happened, what is saved and the command that resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.errors import RunFolderError, RunStopped
from distill.generation.spool import Spool
from distill.run_folder import (
    RUN_STATE,
    TRAJECTORIES,
    Appender,
    RunFolder,
    read_jsonl,
    write_jsonl,
    write_lines,
    write_text,
)
from distill.teachers.base import PacedTeacher, RunTeacher
from distill.teachers.costs import Meter
from distill.teachers.ledger import LEDGER_FILE, Ledger
from distill.trajectory import Plan, PlanList, Trajectory, plan_column

__all__ = ["RUN_STATE", "TRAJECTORIES", "RunSession", "fingerprint"]

# Keys that change neither a request nor a conversation: changing them keeps the finished conversations.
_NEUTRAL_TEACHER = ("concurrency", "max_retries", "timeout_s", "rpm", "tpm", "backoff_s", "breaker_s", "price", "base_url",
                    "endpoints",
                    "mode", "batch_poll_s", "service_tier", "batch_price")  # online or batch: the same requests


def fingerprint(config: Config, plans: Sequence[Plan], chunk_texts: Sequence[str]) -> str:
    """A hash of what determines the conversations of a run."""
    data = config.model_dump(mode="json")
    for key in ("name", "export", "publish", "judge"):  # the judge grades conversations, it does not change them
        data.pop(key, None)
    for key in _NEUTRAL_TEACHER:
        data["teacher"].pop(key, None)
    data["teacher"]["provider"] = config.teacher.resolved_provider()
    for key in ("max_cost_usd", "max_extra_conversations", "mix_tolerance", "reject_tool_errors"):  # budgets; export
        data["generation"].pop(key, None)
    data["distill"] = version("distill")  # another version may validate differently: its verdicts are not reused
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    for plan in plans:
        digest.update(plan.model_dump_json().encode())
    for text in chunk_texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()[:32]


def _read_finished(path: Path) -> tuple[dict[str, Trajectory], dict[str, str], int]:
    """Finished (accepted / rejected) conversations of a trajectories file, their lines, and lines dropped."""
    finished: dict[str, Trajectory] = {}
    lines: dict[str, str] = {}
    dropped = 0
    if not path.is_file():
        return finished, lines, dropped
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                trajectory = Trajectory.model_validate_json(line)
            except ValueError:  # a line cut short by a kill
                dropped += 1
                continue
            if trajectory.outcome == "failed" or trajectory.id in finished:
                dropped += 1
                continue
            finished[trajectory.id] = trajectory
            lines[trajectory.id] = line if line.endswith("\n") else line + "\n"
    return finished, lines, dropped


def _read_plans(path: Path) -> dict[str, tuple[Any, ...]]:
    """The plans a previous invocation wrote, as rows by id ({} when they cannot be read: then nothing is
    resumed)."""
    try:
        return PlanList(read_jsonl(path, Plan.model_validate_json)).rows_by_id()
    except RunFolderError:
        return {}


class RunSession:
    """One invocation's view of a run folder: what is finished, where new conversations go, what was paid."""

    def __init__(self, config: Config, run_dir: Path | None, teacher: Any) -> None:
        self.config, self.run_dir, self.teacher = config, run_dir, teacher
        self.finished: dict[str, Trajectory] = {}
        self._resumed: set[str] = set()  # ids of the conversations taken from an earlier invocation
        self._spool: Spool | None = None  # this invocation's finished conversations (distill/generation/spool.py)
        self.recorded = 0
        self.ledger: Ledger | None = None
        self.meter: Meter | None = None
        self.stopped: RunStopped | None = None
        self.plans = PlanList()
        self._planned_before: dict[str, tuple[Any, ...]] = {}  # plans.jsonl as the previous invocation left it
        self._appender: Appender | None = None
        self.fingerprint: str | None = None  # of the run (set by `open`)

    @classmethod
    def ephemeral(cls, config: Config, teacher: Any) -> RunSession:
        """A session without a run folder (nothing resumed, nothing written)."""
        return cls(config, None, teacher)

    @classmethod
    def open(
        cls,
        config: Config,
        run_dir: Path,
        plans: Sequence[Plan],
        chunk_texts: Sequence[str],
        *,
        teacher: Any = None,
        fresh: bool = False,
        from_ledger: bool = False,
    ) -> RunSession:
        """Resume `run_dir` (see the module doc); `from_ledger` answers every request from the ledger only."""
        if from_ledger:
            from distill.teachers.replay import LedgerTeacher

            folder = RunFolder(run_dir)
            folder.require(folder.ledger, "--from-ledger rebuilds a run that a real teacher generated; run `distill "
                           "generate` first")
            teacher = LedgerTeacher(config, None)
        elif teacher is None:
            from distill.teachers import make_teacher

            teacher = make_teacher(config)
        session = cls(config, run_dir, teacher)
        paid = isinstance(teacher, RunTeacher)
        folder = RunFolder(run_dir)
        # a teacher without a ledger (offline) costs nothing: never stale, recompute; a merge of shards is resumed
        # (its conversations came from elsewhere: generation/shards.py)
        fresh = fresh or not (paid or folder.merged.is_file())
        print_ = session.fingerprint = fingerprint(config, plans, chunk_texts)
        state_path, path = folder.run_state, folder.trajectories
        same = False
        if state_path.is_file() and not (fresh or from_ledger):
            try:
                same = json.loads(state_path.read_text(encoding="utf-8")).get("fingerprint") == print_
            except ValueError:
                same = False
        if same:
            session._planned_before = _read_plans(folder.plans)
            finished, lines, dropped = _read_finished(path)
            session.finished = {k: t for k, t in finished.items() if k in session._planned_before}
            if dropped:
                write_text(path, "".join(lines.values()))
        elif path.exists():
            path.unlink()
        session.plans = PlanList(plans)
        write_jsonl(folder.plans, (p.model_dump() for p in plans))
        write_text(state_path, json.dumps({"fingerprint": print_, "config_hash": config.config_hash()}) + "\n")
        if paid:
            session._appender = Appender(path)
            session.ledger = Ledger.open(folder.ledger)
            session.meter = Meter.for_config(config, spent_before_usd=session.ledger.total_usd())
            teacher.use_run(session.ledger, session.meter)
        return session

    # -- during the rollouts ----------------------------------------------------------------------------------------
    @property
    def spool(self) -> Spool:
        """Where this invocation keeps its finished conversations (on disk, in the run folder)."""
        if self._spool is None:
            self._spool = Spool(RunFolder(self.run_dir).parts if self.run_dir is not None else None)
        return self._spool

    def done(self, plan: Plan) -> Trajectory | None:
        """The conversation finished for this very plan: by an earlier wave of this invocation (batch mode), or by an
        earlier invocation (then it moves to the spool), if any."""
        if plan.id in self.spool:
            return self.spool.get(plan.id)
        finished = self.finished.get(plan.id)
        if finished is None or self._planned_before.get(plan.id) != PlanList.row(plan):
            return None
        self._resumed.add(plan.id)
        self.spool.put(self.finished.pop(plan.id))
        return finished

    @property
    def resumed(self) -> int:
        """Conversations taken from an earlier invocation so far."""
        return len(self._resumed)

    def add_plans(self, plans: Sequence[Plan]) -> None:
        """Add plans not yet known (a top-up's extra plans) to plans.jsonl, before they are rolled out."""
        known = set(self.plans.ids())
        new = [p for p in plans if p.id not in known]
        if not new:
            return
        self.plans += new
        if self.run_dir is not None:
            write_jsonl(RunFolder(self.run_dir).plans, (p.model_dump() for p in self.plans))

    def record(self, trajectory: Trajectory) -> None:
        """Append a finished conversation (one write: a kill leaves the file whole, or short of its last line)."""
        self.recorded += 1
        self.spool.put(trajectory)
        if self._appender is not None:
            self._appender.append(trajectory.model_dump_json())

    @property
    def metered(self) -> bool:
        """True when the teacher's traffic is counted (a real endpoint)."""
        return self.meter is not None

    def postfix(self, tally: dict[str, int]) -> dict[str, Any]:
        """The progress bar's figures: requests/s, accepted, rejected, failed, dollars."""
        if self.meter is None:
            return tally
        figures = self.meter.postfix()
        return {"req/s": figures["req/s"], **tally, "$": figures["$"]}

    def stop(self, exc: RunStopped) -> None:
        """Remember why the run stops (the first reason wins)."""
        self.stopped = self.stopped or exc

    def check_stopped(self) -> None:
        """Raise the stop, with what is saved and how to resume, when the run stopped."""
        if self.stopped is None:
            return
        exc = self.stopped
        where = f" in {self.run_dir}/" if self.run_dir else ""
        saved = self.resumed + self.recorded
        message = f"{exc.message}. {saved} finished conversation(s) are saved{where}"
        if self.ledger is not None:
            message += f", every paid answer in {LEDGER_FILE}"
        self.close()
        config = self.config.path or "CONFIG"
        out = f" --out {self.run_dir}" if self.run_dir else ""
        hint = (exc.hint + ": " if exc.hint else "") + f"distill generate {config}{out}"
        raise RunStopped(exc.reason, message, hint=hint) from None

    # -- at the end ---------------------------------------------------------------------------------------------------
    def finish(self, plans: Sequence[Plan]) -> dict[str, Any]:
        """Rewrite trajectories.jsonl in plan order (atomically) from the spool, close; returns the manifest's
        sections."""
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if self.run_dir is not None:
            write_lines(RunFolder(self.run_dir).trajectories, self.spool.lines(plan_column(plans, "id")))
        sections = self.manifest()
        self.close()
        return sections

    def manifest(self) -> dict[str, Any]:
        """The manifest's `resume` and `teacher_usage` sections."""
        out: dict[str, Any] = {"resume": {"resumed_conversations": self.resumed, "new_conversations": self.recorded}}
        if self.meter is not None:
            price = self.meter.price
            usage: dict[str, Any] = {
                "price_usd_per_1m_tokens": (
                    {"input": price.input, "cached_input": price.cached_input, "output": price.output}
                    if price
                    else None
                ),
                "max_cost_usd": self.config.generation.max_cost_usd,
                "this_invocation": self.meter.summary(),
            }
            if self.ledger is not None:
                total = self.ledger.total_usd()
                usage["run_folder"] = {"by_stage": self.ledger.totals(), "usd": round(total, 6) if price else None}
            if isinstance(self.teacher, PacedTeacher):
                usage["limits"] = self.teacher.limits()
            out["teacher_usage"] = usage
        return out

    def close(self) -> None:
        """Release the append handle, the spool and the ledger."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
