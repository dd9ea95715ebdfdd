"""What a finished `generate` run says about itself when it produced nothing: the reason a run exits non-zero.

`nothing_exported` reads the counts of a `GenerateResult` and its manifest's reasons; the CLI prints the line and
exits 1, so a run in which every conversation failed, or every one was rejected, never looks like a success.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["nothing_exported"]


def nothing_exported(result: Any) -> str | None:
    """Why a run exported no example (a `GenerateResult`), or None when it exported some."""
    c, e = result.conversations, result.examples
    if e["train"] + e["validation"]:
        return None
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))

    def why(key: str) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in (manifest.get(key) or {}).items())

    if c["requested"] and c["failed"] == c["requested"]:
        parts = [f"all {c['failed']} conversations failed ({why('failures_by_reason')})"]
    else:
        parts = [f"{c['rejected']} conversation(s) rejected ({why('rejects_by_reason')})"] if c["rejected"] else []
        parts += [f"{c['failed']} failed ({why('failures_by_reason')})"] if c["failed"] else []
    return f"no example was exported: {', '.join(parts) or 'no conversation ran'}; see {result.run_dir}/rejected.jsonl"
