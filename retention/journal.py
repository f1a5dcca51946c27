"""The deletion journal: so a deletion interrupted at any point is finished, with its
receipt, by the next run.

JSON lines appended with one ``write`` each (a SIGKILL leaves whole lines): ``begin``
(consultation id, audit pseudonym, ward, on time or not, reason), ``step`` (what was
deleted so far), ``done`` (receipt written). It holds no personal data and no time. A run first finishes every consultation
begun and not done, then truncates the journal. Losing the file (power loss) loses
nothing but receipts of the interrupted deletions: the data themselves are found again
by deadline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Pending:
    """A deletion begun and not finished."""

    consultation_id: str
    ward: str
    on_time: bool
    reason: str
    pseudonym: str = ""
    counts: dict[str, int] = field(default_factory=dict)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _append(self, record: dict[str, Any]) -> None:
        os.write(self._open(), (json.dumps(record, separators=(",", ":")) + "\n").encode())

    def begin(self, cid: str, ward: str, on_time: bool, reason: str,
              pseudonym: str = "") -> None:
        self._append({"op": "begin", "id": cid, "ward": ward, "on_time": on_time,
                      "reason": reason, "pseudonym": pseudonym})

    def step(self, cid: str, **counts: int) -> None:
        self._append({"op": "step", "id": cid, **counts})

    def done(self, cid: str) -> None:
        self._append({"op": "done", "id": cid})

    def pending(self) -> list[Pending]:
        """Deletions begun and not done, in the order they began."""
        found: dict[str, Pending] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                rec = json.loads(line)
                op, cid = rec["op"], str(rec["id"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn line
            if op == "begin":
                found[cid] = Pending(cid, str(rec.get("ward", "")),
                                     bool(rec.get("on_time", True)),
                                     str(rec.get("reason", "deadline")),
                                     str(rec.get("pseudonym", "")))
            elif op == "step" and cid in found:
                for key, value in rec.items():
                    if key not in ("op", "id") and isinstance(value, int):
                        found[cid].counts[key] = found[cid].counts.get(key, 0) + value
            elif op == "done":
                found.pop(cid, None)
        return list(found.values())

    def reset(self) -> None:
        """Forget finished deletions (call only when ``pending()`` is empty)."""
        self.close()
        try:
            os.truncate(self.path, 0)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
