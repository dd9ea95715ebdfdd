"""A small MCP server over SQLite, for configs/mcp_agent.yaml: an order desk with two tools.

Run by distill over stdio (`command: [python, servers/orders.py]`); the database is ORDERS_DB (a SQLite file,
relative to the config's folder, created with a few demo orders the first time) or, by default, those demo orders
in memory. Written with the official
`mcp` SDK's FastMCP; its tools' schemas (nullable and enum arguments) are what distill lists and trains on.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path
from typing import Literal

from mcp.server.fastmcp import FastMCP

Status = Literal["pending", "shipped", "delivered", "cancelled"]
_STATUSES: tuple[Status, ...] = ("pending", "shipped", "delivered", "cancelled")
_ITEMS = ("USB-C cable", "laptop stand", "notebook", "keyboard", "monitor arm", "mouse pad", "headset", "webcam")


def _orders() -> list[tuple[str, str, str, str, float]]:
    """The demo orders A-0000 .. A-9999 (customers customer0000 .. customer4999 have two each); deterministic."""
    rng = random.Random(0)
    return [
        (f"A-{i:04d}", f"customer{i % 5000:04d}@example.com", rng.choice(_STATUSES),
         f"{rng.randint(1, 3)} x {rng.choice(_ITEMS)}", round(rng.uniform(5, 120), 2))
        for i in range(10000)
    ]


server = FastMCP("orders", log_level="WARNING")
_CONNECTION: list[sqlite3.Connection] = []


def _db() -> sqlite3.Connection:
    if not _CONNECTION:
        name = os.environ.get("ORDERS_DB", ":memory:")
        fresh = name == ":memory:" or not Path(name).exists()
        db = sqlite3.connect(name, check_same_thread=False)
        if fresh:
            db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT, status TEXT, items TEXT, total REAL)")
            db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", _orders())
            db.commit()
        _CONNECTION.append(db)
    return _CONNECTION[0]


def _row(row: tuple) -> dict:
    return dict(zip(("order_id", "customer", "status", "items", "total_usd"), row, strict=True))


@server.tool()
def lookup_order(order_id: str) -> str:
    """Look up one order by its id (like A-1001): its customer, status, items and total."""
    row = _db().execute("SELECT * FROM orders WHERE id = ?", (order_id.strip().upper(),)).fetchone()
    if row is None:
        raise ValueError(f"no order {order_id!r}")
    return json.dumps(_row(row))


@server.tool()
def list_orders(customer: str | None = None, status: Status | None = None, limit: int = 5) -> str:
    """List orders, newest first, optionally only one customer's (an email) and / or one status (at most 20)."""
    query, args = "SELECT * FROM orders WHERE 1 = 1", []
    if customer:
        query, args = query + " AND customer = ?", [*args, customer.strip().lower()]
    if status:
        query, args = query + " AND status = ?", [*args, status]
    rows = _db().execute(query + " ORDER BY id DESC LIMIT ?", (*args, max(1, min(limit, 20)))).fetchall()
    return json.dumps([_row(r) for r in rows])


if __name__ == "__main__":
    server.run()
