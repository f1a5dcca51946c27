"""``madoguchi doctor`` (issue 18): a production-style configuration passes; each broken
one fails with the right line and a fix; ``serve`` refuses to start on a failing start-up
check outside development mode."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from madoguchi.certs import _leaf, load_cert, load_key
from madoguchi.doctor import Context, Result, load_checks, run_checks
from madoguchi.doctor import clock as doctor_clock
from tests.fixtures.coturn import Coturn
from tests.fixtures.kannel import Kannel
from tests.fixtures.ports import free_port, port_open, stop_process, wait_for
from tests.fixtures.production import ProductionSite

REPO = Path(__file__).resolve().parents[1]
MADOGUCHI = [sys.executable, "-m", "madoguchi.cli"]


def doctor(site: ProductionSite, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MADOGUCHI, "doctor", "--config", str(config), "--timeout", "3",
                           *args], capture_output=True, text=True, env=site.env, cwd=REPO,
                          timeout=120)


def check(site: ProductionSite, overrides: dict[str, dict[str, Any]] | None,
          only: str) -> list[Result]:
    """The results of one check (in-process) for the site with ``overrides``."""
    cfg = site.config(overrides)
    return asyncio.run(run_checks(Context(cfg, timeout=3), only=[only]))


def statuses(results: list[Result]) -> set[str]:
    return {r.status for r in results}


# ---------------------------------------------------------------------------- good


def test_good_configuration_passes_and_a_wrong_gateway_password_fails(
        production_site: ProductionSite, kannel: Kannel, redis_server: str) -> None:
    site = production_site
    good = {"sms": {"kannel_url": kannel.sendsms_url, "kannel_username": kannel.username,
                    "kannel_password": kannel.password},
            "store": {"backend": "redis", "redis_url": redis_server}}
    # (this machine's own clock is not the configuration's: test_clock covers that check)
    done = doctor(site, site.write(good), "--skip", "clock")
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in lines if line.startswith("FAIL")]
    names = {line.split()[1].rstrip(":") for line in lines}
    # one line (or more) per check
    assert names == {c.name for c in load_checks()} - {"clock.synchronised"}
    text = done.stdout
    assert f"OK      certificates.server: chain of 1 verifies for {site.host}" in text
    assert "OK      sms.gateway: gateway" in text and "accepts our credentials" in text
    assert "OK      store.redis_persistence: Redis keeps nothing on disk" in text
    assert "OK      keys.kek: key-encryption key" in text and "(mode 600)" in text
    assert "doctor: " in done.stderr and " 0 fail" in done.stderr

    wrong = good | {"sms": good["sms"] | {"kannel_password": "wrong-password"}}
    done = doctor(site, site.write(wrong), "--only", "sms")
    assert done.returncode == 1
    assert ("FAIL    sms.gateway: the gateway " + kannel.sendsms_url
            + " refused our credentials -> fix: make [sms] kannel_username/password match"
            in done.stdout), done.stdout


# ---------------------------------------------------------------------------- broken


def _expired_server_cert(site: ProductionSite) -> dict[str, dict[str, Any]]:
    ca, ca_key = load_cert(site.certs.ca), load_key(site.certs.ca_key)
    key = load_key(Path(site.sections["tls"]["server_key"]))
    now = dt.datetime.now(dt.UTC)
    cert = _leaf(ca, ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site.host)]),
                 key, now - dt.timedelta(days=30), now - dt.timedelta(days=1),
                 ExtendedKeyUsageOID.SERVER_AUTH,
                 x509.SubjectAlternativeName([x509.DNSName(site.host)]))
    path = site.dir / "expired.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"tls": {"server_cert": str(path)}}


def _expired_crl(site: ProductionSite) -> dict[str, dict[str, Any]]:
    ca, key = load_cert(site.certs.staff_ca), load_key(site.certs.staff_ca_key)
    now = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(now - dt.timedelta(days=10)).next_update(now - dt.timedelta(days=1))
           .sign(key, hashes.SHA256()))
    path = site.dir / "old-crl.pem"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return {"tls": {"staff_crl": str(path)}}


def _loose_key(site: ProductionSite) -> dict[str, dict[str, Any]]:
    path = site.dir / "loose.key"
    shutil.copy(site.sections["tls"]["server_key"], path)
    path.chmod(0o644)
    return {"tls": {"server_key": str(path)}}


def _kek_in_recordings(site: ProductionSite) -> dict[str, dict[str, Any]]:
    rec = site.dir / "rec"
    rec.mkdir()
    kek = rec / "kek.hex"
    kek.write_text(os.urandom(32).hex())
    kek.chmod(0o600)
    return {"recording": {"dir": str(rec), "kek_file": str(kek)}}


def _recording_under_a_file(site: ProductionSite) -> dict[str, dict[str, Any]]:
    blocker = site.dir / "not-a-folder"
    blocker.write_text("")
    return {"recording": {"dir": str(blocker / "recordings")}}


def _open_data_dir(site: ProductionSite) -> dict[str, dict[str, Any]]:
    Path(site.sections["server"]["data_dir"]).chmod(0o755)
    return {}


BROKEN: dict[str, tuple[Callable[[ProductionSite], dict[str, dict[str, Any]]], str, str]] = {
    # case: (overrides, check, text of its FAIL line)
    "no_tls": (lambda s: {"tls": {"server_cert": ""}}, "certificates.server",
               "[tls] server_cert/server_key are not set"),
    "expired": (_expired_server_cert, "certificates.server", "expired on"),
    "wrong_name": (lambda s: {"tls": {"server_cert": str(s.certs.server_cert),
                                      "server_key": str(s.certs.server_key)}},
                   "certificates.server",
                   "a phone would refuse the certificate for {host}: Hostname mismatch"),
    "untrusted": (lambda s: {"tls": {"server_cert": str(s.certs.staff_ca)}},
                  "certificates.server", "do not load as a PEM chain and its key"),
    "staff_ca_not_ca": (lambda s: {"tls": {"staff_ca": s.sections["tls"]["server_cert"]}},
                        "certificates.staff_ca", "is not a CA certificate"),
    "crl_expired": (_expired_crl, "certificates.crl", "has passed: every office PC is refused"),
    "no_crl": (lambda s: {"tls": {"staff_crl": ""}}, "certificates.crl",
               "a revoked office PC could still connect"),
    "key_mode": (_loose_key, "keys.files", "has mode 644: other users can read it"),
    "key_is_a_folder": (lambda s: {"tls": {"server_key": str(s.dir)}}, "keys.files",
                        "is not a file"),
    "no_kek": (lambda s: {"recording": {"kek_file": ""}}, "keys.kek",
               "key-encryption key not usable"),
    "kek_in_recordings": (_kek_in_recordings, "keys.kek", "is inside the recording folder"),
    "data_dir_mode": (_open_data_dir, "keys.files", "has mode 755: other users can list"),
    "http": (lambda s: {"server": {"public_url": f"http://{s.host}"}}, "public_url.https",
             "is not https"),
    "ip_url": (lambda s: {"server": {"public_url": "https://127.0.0.1:8443"}},
               "public_url.https", "uses the address 127.0.0.1, not a name"),
    "console_sms": (lambda s: {"sms": {"provider": "console"}}, "sms.provider",
                    "only writes to the development outbox"),
    "gateway_down": (lambda s: {}, "sms.gateway", "does not answer (gateway_unavailable)"),
    "operator_open": (lambda s: {"operator": {"host": "0.0.0.0"}}, "operator.listener",
                      "(not loopback) without a bearer token"),
    "sfu_loopback": (lambda s: {"sfu": {"host_addresses": ["127.0.0.1"]}}, "sfu.addresses",
                     "offers 127.0.0.1: no phone can send media there"),
    "sfu_allows_loopback": (lambda s: {"sfu": {"allowed_candidate_networks": ["127.0.0.1/32"]}},
                            "sfu.addresses", "allowed_candidate_networks has 127.0.0.1/32"),
    "recording_folder": (_recording_under_a_file, "recording.folder", "is not writable"),
    "redis_down": (lambda s: {"store": {"backend": "redis",
                                       "redis_url": f"redis://127.0.0.1:{free_port()}/0"}},
                   "store.redis_persistence", "cannot read Redis' persistence settings"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_configuration_fails_with_its_line(
        production_site: ProductionSite, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(production_site.trust))
    make, name, text = BROKEN[case]
    # The same check passes on the good configuration (so the failure is this change's).
    if name not in ("sms.gateway", "store.redis_persistence"):
        assert "fail" not in statuses(check(production_site, {}, name)), name
    results = check(production_site, make(production_site), name)
    failing = [r for r in results if r.status == "fail"]
    assert failing, results
    expected = text.format(host=production_site.host)
    assert any(expected in r.message for r in failing), failing
    assert all(r.fix and r.name == name for r in failing)
    assert all(r.line().startswith(f"FAIL    {name}: ") and " -> fix: " in r.line()
               for r in failing)


def test_redis_that_saves_to_disk_fails(production_site: ProductionSite,
                                        tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "3600 1", "--appendonly", "yes", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=10,
                 what="redis-server")
        results = check(production_site, {"store": {"backend": "redis", "redis_url":
                                                    f"redis://127.0.0.1:{port}/0"}},
                        "store.redis_persistence")
    finally:
        stop_process(proc)
    [r] = results
    assert r.status == "fail"
    assert 'save = "3600 1" (RDB snapshots) and appendonly = yes' in r.message
    assert 'save ""' in r.fix


def test_port_in_use_fails(production_site: ProductionSite) -> None:
    port = production_site.sections["server"]["citizen_port"]
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        results = check(production_site, {}, "ports")
    bad = [r for r in results if r.status == "fail"]
    assert len(bad) == 1 and f"citizen site port 127.0.0.1:{port} is in use" in bad[0].message
    assert statuses(check(production_site, {}, "ports")) == {"ok"}


def _fake_tool(folder: Path, name: str, output: str) -> None:
    path = folder / name
    lines = "".join(f"printf '%s\\n' '{line}'\n" for line in output.splitlines())
    path.write_text("#!/bin/sh\n" + lines)  # builtins only: PATH holds just this folder
    path.chmod(0o755)


def test_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No time service answering is reported as unknown (not ok, not a crash); chronyc's
    and timedatectl's answers are read. (chronyd cannot run in this sandbox: the tools are
    stand-ins printing their real output format.)"""
    monkeypatch.setattr(doctor_clock, "TIMESYNCD_FLAG", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))
    ctx = Context(cfg=None)  # type: ignore[arg-type]
    assert doctor_clock.clock_synchronised(ctx).status == "unknown"
    _fake_tool(tmp_path, "timedatectl", "no")
    assert doctor_clock.clock_synchronised(ctx).status == "fail"
    _fake_tool(tmp_path, "chronyc", "Reference ID    : 7F7F0101 ()\nLeap status     : Normal")
    result = doctor_clock.clock_synchronised(ctx)
    assert result.status == "ok" and "leap status Normal" in result.message
    _fake_tool(tmp_path, "chronyc", "Leap status     : Not synchronised")
    assert doctor_clock.clock_synchronised(ctx).status == "fail"


def test_clock_on_this_machine_is_reported_cleanly() -> None:
    result = doctor_clock.clock_synchronised(Context(cfg=None))  # type: ignore[arg-type]
    assert result.status in ("ok", "fail", "unknown") and result.message


# ---------------------------------------------------------------------------- serve


def test_serve_refuses_a_failing_startup_check(production_site: ProductionSite) -> None:
    site = production_site
    config = site.write({"server": {"public_url": f"http://{site.host}"},
                         "sms": {"provider": "console"}})
    done = subprocess.run([*MADOGUCHI, "serve", "--config", str(config)], capture_output=True,
                          text=True, env=site.env, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert "madoguchi: cannot start: FAIL    public_url.https:" in done.stderr
    assert "madoguchi: cannot start: FAIL    sms.provider:" in done.stderr
    assert "madoguchi serve --dev" in done.stderr
    assert not port_open(site.sections["operator"]["port"])


# ---------------------------------------------------------------------------- TURN


def test_turn_relay_is_allocated_with_a_minted_credential(
        production_site: ProductionSite, coturn: Coturn, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    # Trust both the site's CA and the one of coturn's certificate (the session's dev PKI).
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(production_site.trust.read_bytes()
                       + Path(coturn.settings.cert).with_name("ca.pem").read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    turn = coturn.turn_overrides(coturn.write_secret(tmp_path / "turn.key"))
    results = check(production_site, turn, "turn")
    assert [r.status for r in results] == ["ok", "ok", "ok"], results
    assert [r.message.split(":")[0] for r in results] == ["turn", "turn", "turns"]
    assert all("relay allocated at 127.0.0.1:" in r.message for r in results)

    wrong = tmp_path / "wrong.key"
    wrong.write_text(os.urandom(32).hex())
    results = check(production_site, coturn.turn_overrides(wrong), "turn")
    assert [r.status for r in results] == ["fail"] * 3, results
    assert all("allocation refused" in r.message and "static-auth-secret" in r.fix
               for r in results)

    closed = turn | {"turn": turn["turn"] | {"port": free_port(), "tls_port": free_port()}}
    results = check(production_site, closed, "turn")
    assert {r.status for r in results} == {"fail"}
    assert all("no answer" in r.message for r in results), results


def test_journal_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from madoguchi.doctor import journal

    ctx = Context(cfg=None)  # type: ignore[arg-type]
    monkeypatch.setattr(journal, "CONF", tmp_path / "journald@madoguchi.conf")
    assert journal.journal_retention(ctx).status == "warn"  # not installed
    shutil.copy(REPO / "config/systemd/journald@madoguchi.conf", journal.CONF)
    result = journal.journal_retention(ctx)
    assert result.status == "ok" and "gone within 24 h" in result.message
    journal.CONF.write_text("[Journal]\nMaxRetentionSec=1day\nMaxFileSec=1h\n")
    result = journal.journal_retention(ctx)
    assert result.status == "fail" and "up to 26 h" in result.message
    journal.CONF.write_text("[Journal]\nStorage=persistent\n")
    assert journal.journal_retention(ctx).status == "fail"
