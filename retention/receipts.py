"""Deletion receipts: non-personal proof that a consultation's data were deleted.

A receipt holds the consultation's audit pseudonym (never its id), the ward, the day of
deletion, whether it was on time (within 24 h of the retention start), the reason and
what was deleted (data key, number of recording files, store record): no deadline and no
deletion instant, which would give the call's end. It goes to the audit
log (any object with ``write(action, **fields)``, sync or async, such as
signalling.audit.AuditLog) or, without one, to the structured log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from typing import Any, Protocol

from madoguchi.logs import event

log = logging.getLogger(__name__)

RECEIPT_ACTION = "retention_deleted"


class AuditWriter(Protocol):
    def write(self, action: str, **fields: Any) -> Any: ...


class Receipts:
    def __init__(self, audit: AuditWriter | None = None) -> None:
        self.audit = audit

    async def write(self, *, pseudonym: str, ward: str, on_time: bool, deleted_at: float,
                    reason: str, data_key: int, files: int, record: int,
                    recovered: bool = False) -> None:
        fields: dict[str, Any] = {
            "pseudonym": pseudonym, "ward": ward,
            "date": dt.datetime.fromtimestamp(deleted_at, dt.UTC).date().isoformat(),
            "on_time": on_time, "reason": reason, "data_key": data_key,
            "files": files, "record": record,
        }
        if recovered:
            fields["recovered"] = True  # finished after an interrupted run
        if self.audit is None:
            event(log, RECEIPT_ACTION, **fields)
            return
        if inspect.iscoroutinefunction(self.audit.write):
            await self.audit.write(RECEIPT_ACTION, **fields)
            return
        # A file audit log may fsync: keep that off the event loop (media runs there).
        result = await asyncio.to_thread(self.audit.write, RECEIPT_ACTION, **fields)
        if inspect.isawaitable(result):
            await result
