"""Optional uvloop (``[sfu] use_uvloop``): call before the event loop is created."""

from __future__ import annotations

import asyncio
import logging

from madoguchi.logs import event

log = logging.getLogger(__name__)


def install_uvloop(enabled: bool = True) -> bool:
    """Make new event loops uvloop loops when enabled and installed; True if done."""
    if not enabled:
        return False
    try:
        import uvloop
    except ImportError:
        event(log, "sfu_uvloop_missing", level=logging.WARNING)
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
