"""The consultation service in-process (real SQLite store, console SMS, a manual clock):
link lifetime, delivery reports, deadlines and the state machine under time travel."""

from __future__ import annotations

from pathlib import Path

import pytest

from madoguchi.clock import ManualClock
from madoguchi.config import Config
from retention.deadline import RUN_MARGIN_SECONDS
from sfu.sfu import LocalSfu
from signalling.consultations import Actor, ConsultationError, ConsultationService, LinkRefused
from signalling.hub import Hub
from signalling.linktoken import SignallingTokens
from signalling.phone import PhoneCipher
from signalling.sms.console import ConsoleProvider
from signalling.sms.interfaces import SmsError
from signalling.store.sqlite import SqliteStore

STAFF = Actor(username="tanaka", ward="灘区")
PERIOD = 24 * 3600 - RUN_MARGIN_SECONDS  # the default period, as the lifecycle applies it
OTHER_WARD = Actor(username="sato", ward="垂水区")


@pytest.fixture
async def harness(tmp_path: Path):
    clock = ManualClock()
    cfg = Config()
    cfg.server.data_dir = str(tmp_path)
    cfg.sfu.host_addresses = ["127.0.0.1"]
    cfg.sfu.allowed_candidate_networks = ["127.0.0.1/32"]
    store = SqliteStore(tmp_path / "state.db", clock)
    sms = ConsoleProvider()
    sfu = LocalSfu(cfg.sfu)
    service = ConsultationService(
        store=store, cfg=cfg, clock=clock, hub=Hub(), sms=sms,
        phone_cipher=PhoneCipher(b"k" * 32), audit=None, sfu=sfu,
        tokens=SignallingTokens(b"s" * 32, 300, clock.now))
    yield service, sms, clock
    await sfu.close()
    await store.close()


def token_from(sms: ConsoleProvider, cid: str) -> str:
    message = next(m for m in reversed(sms.outbox) if m.reference.startswith(cid))
    return message.text.rsplit("/c/", 1)[1]


async def test_link_lifetime_and_expiry(harness) -> None:
    service, sms, clock = harness
    c = await service.create(STAFF, "090-1111-2222")
    token = token_from(sms, c.id)
    assert (await service.find_link(token, "")).id == c.id
    clock.advance(30 * 60 - 1)
    assert (await service.find_link(token, "")).id == c.id
    clock.advance(1)
    with pytest.raises(LinkRefused):
        await service.find_link(token, "")
    expired = await service.store.get_consultation(c.id)
    assert expired is not None and expired.state == "expired" and not expired.link_hash
    # Never connected: deleted one retention period after creation at the latest.
    assert expired.deadline <= c.created_at + 24 * 3600


async def test_stale_delivery_report_after_resend_is_ignored(harness) -> None:
    service, sms, clock = harness
    c = await service.create(STAFF, "090-1111-2222")
    first = sms.outbox[-1].reference
    await service.resend(STAFF, c.id)
    second = sms.outbox[-1].reference
    assert first != second and first.startswith(c.id) and second.startswith(c.id)
    await service.sms_report(first, "failed")
    assert (await service.store.get_consultation(c.id)).state == "sms_sent"  # type: ignore[union-attr]
    await service.sms_report(second, "delivered")
    assert (await service.store.get_consultation(c.id)).sms_status == "delivered"  # type: ignore[union-attr]
    await service.sms_report(second, "sent")  # a late "accepted" does not undo delivered
    assert (await service.store.get_consultation(c.id)).sms_status == "delivered"  # type: ignore[union-attr]
    await service.sms_report(second, "failed")
    assert (await service.store.get_consultation(c.id)).state == "failed"  # type: ignore[union-attr]


async def test_gateway_failure_loses_nothing_and_retry_works(harness) -> None:
    service, sms, clock = harness
    sms.fail_next(SmsError("gateway_unavailable", "The SMS gateway is not reachable."))
    c = await service.create(STAFF, "+81 80 1234 5678")
    assert c.state == "created" and c.sms_status == "failed" and c.sms_error
    view = service.view(c, STAFF)
    assert view["link"].startswith("https://") and view["phone_masked"] == "080-****-5678"
    again = await service.resend(STAFF, c.id)
    assert again.state == "sms_sent" and again.sms_status == "sent"


async def test_consent_binds_one_device_and_end_sets_the_deadline(harness) -> None:
    service, sms, clock = harness
    c = await service.create(STAFF, "090-1111-2222")
    token = token_from(sms, c.id)
    c, cookie, jwt = await service.consent(token, "")
    assert c.state == "consented" and await service.check_signalling_token(jwt, cookie) is not None
    with pytest.raises(LinkRefused) as refused:
        await service.consent(token, "another-device")
    assert refused.value.reason == "in_use"
    assert (await service.reconnect(token, cookie))[0].id == c.id
    # A consented link still expires if the call never starts.
    clock.advance(31 * 60)
    with pytest.raises(LinkRefused):
        await service.find_link(token, cookie)
    c2 = await service.create(STAFF, "090-3333-4444")
    clock.advance(10)
    ended = await service.staff_end(STAFF, c2.id)
    assert ended.state == "ended" and ended.deadline == clock.now() + PERIOD
    with pytest.raises(LinkRefused):
        await service.find_link(token_from(sms, c2.id), "")


async def test_wards_are_isolated(harness) -> None:
    service, sms, clock = harness
    c = await service.create(STAFF, "090-1111-2222")
    for action in (service.get_for, service.staff_end, service.resend, service.revoke):
        with pytest.raises(ConsultationError) as err:
            await action(OTHER_WARD, c.id)
        assert err.value.status == 404
    assert await service.list_for(OTHER_WARD) == []
    admin = Actor(username="root", ward="", role="admin")
    assert [x.id for x in await service.list_for(admin)] == [c.id]


async def test_only_https_links_reach_the_citizen(harness) -> None:
    service, sms, clock = harness
    c = await service.create(STAFF, "090-1111-2222")
    for url in ("http://example.jp", "javascript:alert(1)", "https://", "ftp://x"):
        with pytest.raises(ConsultationError) as err:
            await service.send_link(STAFF, c.id, url, "")
        assert err.value.code == "invalid_url"


async def _live(service: ConsultationService, sms: ConsoleProvider) -> str:
    c = await service.create(STAFF, "090-5555-6666")
    await service.consent(token_from(sms, c.id), "")
    service._rooms_wired.add(c.id)  # as if the citizen's media had arrived in this process
    await service._went_live(c.id)
    return c.id


async def test_running_calls_keep_their_data_and_forgotten_calls_end(harness) -> None:
    service, sms, clock = harness
    cid = await _live(service, sms)
    for _ in range(6):  # 2.5 h of a running call: never deleted mid-call
        clock.advance(25 * 60)
        await service.expire_due()
        c = await service.store.get_consultation(cid)
        assert c is not None and c.state == "live" and c.deadline > clock.now() + 23 * 3600
    clock.advance(31 * 60)  # past [server] max_call_minutes = 180
    await service.expire_due()
    c = await service.store.get_consultation(cid)
    assert c is not None and c.state == "ended" and c.end_reason == "max_duration"
    assert c.deadline == clock.now() + PERIOD


async def test_a_citizen_gone_past_the_grace_ends_the_call(harness) -> None:
    import time

    service, sms, clock = harness
    cid = await _live(service, sms)
    service._citizen_gone[cid] = time.monotonic() - 9 * 60
    await service.expire_due()
    assert (await service.store.get_consultation(cid)).state == "live"  # type: ignore[union-attr]
    service._citizen_gone[cid] = time.monotonic() - 11 * 60
    await service.expire_due()
    c = await service.store.get_consultation(cid)
    assert c is not None and c.state == "ended" and c.end_reason == "citizen_lost"


async def test_a_call_cut_by_a_crash_is_deleted_24h_after_the_disconnect(harness) -> None:
    """A server SIGKILLed mid-call and restarted 20 h later: the call ended when the old
    process was last alive (its heartbeat), and its deadline runs from then, not from the
    restart (seen before: data kept 44 h after the disconnect, duration stored as 20 h)."""
    service, sms, clock = harness
    cid = await _live(service, sms)
    clock.advance(600)
    await service.heartbeat()  # the old process's last housekeeping round
    disconnect = clock.now()
    clock.advance(20 * 3600)  # the outage
    service._rooms_wired.discard(cid)  # a new process: no room here
    await service.load_heartbeat()
    await service.expire_due()
    c = await service.store.get_consultation(cid)
    assert c is not None and c.state == "ended" and c.end_reason == "server_restart"
    assert c.times["ended"] == disconnect and c.times["duration"] == 600
    assert c.deadline <= disconnect + 24 * 3600


async def test_a_live_call_without_a_room_here_was_cut_by_a_restart(harness) -> None:
    service, sms, clock = harness
    cid = await _live(service, sms)
    service._rooms_wired.discard(cid)
    await service.expire_due()
    c = await service.store.get_consultation(cid)
    assert c is not None and c.end_reason == "server_restart"


async def test_in_call_marks_live_in_the_record_not_the_audit_log(harness) -> None:
    """A link sent during the call is a marker on the review timeline: its exact time is
    kept in the consultation record (deleted with it), not in the audit log (the day)."""
    from recorder.manifest import Manifest
    from review.timeline import markers
    service, sms, clock = harness
    cid = await _live(service, sms)
    clock.advance(42)
    await service.send_link(STAFF, cid, "https://www.city.example.jp/hoiku", "")
    c = await service.store.get_consultation(cid)
    assert c is not None
    assert markers(c, Manifest(cid, "k"), 60.0) == [{"at": 42.0, "kind": "link_sent"}]
