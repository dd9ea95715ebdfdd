"""The ledger teacher: answers every request from a run folder's ledger and never calls a model.

`distill generate CONFIG --from-ledger` uses it to rebuild a run (questions, rollouts, validation, export) with zero
teacher calls, e.g. after changing validation rules or the export split. A request the ledger does not hold (a
conversation that now takes another path) fails with reason `not_in_ledger`.
"""

from __future__ import annotations

from distill.config import Config
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.teachers.costs import Meter
from distill.teachers.ledger import Ledger

__all__ = ["LedgerTeacher"]


class LedgerTeacher:
    """Replays stored answers; the trajectories name the model that gave them."""

    provider = "openai"

    def __init__(self, config: Config, ledger: Ledger | None) -> None:
        self.model = config.teacher.model
        self.ledger = ledger
        self.meter: Meter | None = None

    def use_run(self, ledger: Ledger | None, meter: Meter | None) -> None:
        """Answer from the run folder's ledger; count the hits in `meter`."""
        self.ledger, self.meter = ledger, meter

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """The stored answer of `request`, or TeacherCallError("not_in_ledger")."""
        from distill.teachers.openai_teacher import reply_from_body

        stored = self.ledger.lookup(request.key(self.model)) if self.ledger is not None else None
        if stored is None:
            raise TeacherCallError("not_in_ledger", f"the ledger holds no answer to this {request.stage} request")
        if self.meter is not None:
            self.meter.record(request.stage, stored.usage, hit=True)
        return reply_from_body(stored.body(), self.model)

    async def aclose(self) -> None:
        """Nothing to release (the session closes the ledger)."""

