"""The staff CA and the development PKI (madoguchi/certs.py) and ``madoguchi certs``."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from madoguchi.certs import (
    CertError,
    StaffCA,
    load_cert,
    make_dev_certs,
    normalize_serial,
)
from madoguchi.cli import main
from tests.fixtures.certs import Pki

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _crl_serials(path: Path) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl(path.read_bytes())}


# ---------------------------------------------------------------------------- dev PKI


def test_dev_certs_files_and_idempotence(tmp_path: Path) -> None:
    first = make_dev_certs(tmp_path / "dev")
    assert first.created
    for name in ("ca.pem", "server.pem", "server.key", "staff-ca.pem", "staff-ca.key",
                 "staff-crl.pem", "staff-pc1.p12", "staff-pc1.pem", "staff-pc1.key",
                 "staff-pc1.p12.password", "index.json"):
        assert (tmp_path / "dev" / name).is_file(), name
    for secret in ("server.key", "staff-ca.key", "staff-pc1.key", "staff-pc1.p12",
                   "staff-pc1.p12.password", "ca.key"):
        assert _mode(tmp_path / "dev" / secret) == 0o600, secret
    assert _mode(tmp_path / "dev") == 0o700
    before = {p.name: p.read_bytes() for p in (tmp_path / "dev").iterdir()}
    again = make_dev_certs(tmp_path / "dev")
    assert not again.created
    assert again.p12_password == first.p12_password
    assert {p.name: p.read_bytes() for p in (tmp_path / "dev").iterdir()} == before
    # A lost client bundle is re-issued; the CA is kept.
    (tmp_path / "dev" / "staff-pc1.p12").unlink()
    third = make_dev_certs(tmp_path / "dev")
    assert third.created and third.p12_password != first.p12_password
    assert (tmp_path / "dev" / "staff-ca.pem").read_bytes() == before["staff-ca.pem"]


def test_server_certificate_and_p12(pki: Pki) -> None:
    dev = pki.dev
    server = load_cert(dev.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # Two separate trust chains.
    assert server.issuer == load_cert(dev.ca).subject
    assert server.issuer != pki.staff_ca.cert.subject
    client = load_cert(dev.client_cert)
    assert client.issuer == pki.staff_ca.cert.subject
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # The .p12 opens with its password only.
    key, cert, extra = pkcs12.load_key_and_certificates(dev.client_p12.read_bytes(),
                                                        dev.p12_password.encode())
    assert cert is not None and cert == client and key is not None
    assert [c.subject for c in extra] == [pki.staff_ca.cert.subject]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(dev.client_p12.read_bytes(), b"wrong")
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(dev.client_p12.read_bytes(), None)


# ---------------------------------------------------------------------------- staff CA


@pytest.fixture
def ca(tmp_path: Path) -> StaffCA:
    d = tmp_path / "ca"
    return StaffCA.init(d / "staff-ca.pem", d / "staff-ca.key", d / "staff-crl.pem")


def test_init_refuses_to_overwrite(ca: StaffCA) -> None:
    with pytest.raises(CertError, match="already exists"):
        StaffCA.init(ca.cert_path, ca.key_path, ca.crl_path)
    assert _crl_serials(ca.crl_path) == set()


def test_issue_list_revoke_renew(ca: StaffCA, tmp_path: Path) -> None:
    a = ca.issue("nada-pc1", days=30, out=tmp_path / "a.p12")
    b = ca.issue("tarumi-pc1", out=tmp_path / "b.p12", compat=True)
    assert a.cert.not_valid_after_utc - a.cert.not_valid_before_utc == dt.timedelta(days=30)
    pkcs12.load_key_and_certificates((tmp_path / "b.p12").read_bytes(),
                                     b.p12_password.encode())
    assert _mode(tmp_path / "a.p12") == 0o600
    assert [r.name for r in ca.records()] == ["nada-pc1", "tarumi-pc1"]
    assert all(r.status() == "valid" for r in ca.records())
    index = json.loads(ca.index_path.read_text())
    assert a.p12_password not in ca.index_path.read_text()  # never stored
    assert index["certs"][0]["serial"] == a.serial

    # by serial, written with colons and upper case
    colon = ":".join(a.serial.upper()[i:i + 2] for i in range(0, len(a.serial), 2))
    assert [r.serial for r in ca.revoke(colon)] == [a.serial]
    assert _crl_serials(ca.crl_path) == {int(a.serial, 16)}
    assert ca.revoke(a.serial) == []  # already revoked: no change
    # by name
    ca.revoke("tarumi-pc1", reason="keyCompromise")
    assert _crl_serials(ca.crl_path) == {int(a.serial, 16), int(b.serial, 16)}
    assert {r.status() for r in ca.records()} == {"revoked"}
    with pytest.raises(CertError, match="no issued certificate"):
        ca.revoke("nobody")

    c = ca.issue("kita-pc1", days=10)
    renewed = ca.renew("kita-pc1")
    assert renewed.serial != c.serial
    assert renewed.cert.public_key() != c.cert.public_key()
    span = renewed.cert.not_valid_after_utc - renewed.cert.not_valid_before_utc
    assert span == dt.timedelta(days=10)
    assert {r.serial: r.status() for r in ca.records() if r.name == "kita-pc1"} == {
        c.serial: "valid", renewed.serial: "valid"}
    newest = ca.renew("kita-pc1", revoke_old=True)
    statuses = {r.serial: r.status() for r in ca.records() if r.name == "kita-pc1"}
    assert statuses == {c.serial: "revoked", renewed.serial: "revoked", newest.serial: "valid"}
    with pytest.raises(CertError):
        ca.renew("tarumi-pc1")  # nothing active to renew


def test_crl_number_increases_and_crl_is_current(ca: StaffCA) -> None:
    def number() -> int:
        crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
        assert crl.last_update_utc <= dt.datetime.now(dt.UTC)
        assert crl.next_update_utc is not None
        assert crl.next_update_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
        assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    n1 = number()
    ca.issue("x")
    ca.revoke("x")
    assert number() == n1 + 1


def test_expired_certificate_is_listed_as_expired(ca: StaffCA) -> None:
    ca.issue("old", days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    assert ca.records()[0].status() == "expired"


@pytest.mark.parametrize("name", ["", "a/b", "x" * 65, " lead", "tab\tname"])
def test_bad_names(ca: StaffCA, name: str) -> None:
    with pytest.raises(CertError):
        ca.issue(name)


def test_normalize_serial() -> None:
    assert normalize_serial("0x3F:2A") == "3f2a"
    assert normalize_serial("003f2a") == "3f2a"
    with pytest.raises(ValueError):
        normalize_serial("nada-pc1")


# ---------------------------------------------------------------------------- CLI


def test_cli_full_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MADOGUCHI_SERVER_DATA_DIR", str(tmp_path / "var"))
    d = str(tmp_path / "pki")
    assert main(["certs", "init", "--dir", d]) == 0
    assert "staff_ca = " in capsys.readouterr().out
    assert main(["certs", "init", "--dir", d]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err

    assert main(["certs", "issue", "nada-pc3", "--dir", d, "--days", "90"]) == 0
    out = capsys.readouterr().out
    password = out.split(".p12 password:")[1].split()[0]
    serial = out.split("serial ")[1].split()[0]
    p12 = Path(d) / "issued" / "nada-pc3.p12"
    pkcs12.load_key_and_certificates(p12.read_bytes(), password.encode())
    assert main(["certs", "issue", "nada-pc3", "--dir", d]) == 1  # would overwrite the file
    capsys.readouterr()

    assert main(["certs", "list", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and serial in out and "nada-pc3" in out

    assert main(["certs", "renew", "nada-pc3", "--dir", d]) == 0
    capsys.readouterr()
    assert main(["certs", "revoke", serial, "--dir", d]) == 0
    assert "Revoked nada-pc3" in capsys.readouterr().out
    assert _crl_serials(Path(d) / "staff-crl.pem") == {int(serial, 16)}
    assert main(["certs", "list", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert out.count("revoked") == 1 and out.count("valid") == 1
    assert main(["certs", "revoke", "unknown-pc", "--dir", d]) == 1
    capsys.readouterr()

    audit = [json.loads(x) for x in (tmp_path / "var" / "audit.log").read_text().splitlines()]
    assert [e["action"] for e in audit] == ["ca_created", "cert_issued", "cert_renewed",
                                            "cert_revoked"]
    assert audit[1]["cert_serial"] == serial and audit[3]["cert_serial"] == serial


def test_cli_uses_tls_config_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MADOGUCHI_SERVER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MADOGUCHI_TLS_STAFF_CA", str(tmp_path / "x" / "ca.pem"))
    monkeypatch.setenv("MADOGUCHI_TLS_STAFF_CRL", str(tmp_path / "x" / "crl.pem"))
    assert main(["certs", "list"]) == 1
    assert "certs init" in capsys.readouterr().err
    assert main(["certs", "init"]) == 0
    assert (tmp_path / "x" / "ca.pem").exists() and (tmp_path / "x" / "crl.pem").exists()
    assert (tmp_path / "x" / "staff-ca.key").exists()


def test_cli_dev_subprocess(tmp_path: Path) -> None:
    """The real console entry: prints the paths and the password, reruns reuse them."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MADOGUCHI_SERVER_DATA_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "madoguchi.cli", "certs", "dev", str(tmp_path / "dev")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "Created" in first.stdout
    password = (tmp_path / "dev" / "staff-pc1.p12.password").read_text().strip()
    assert password in first.stdout and str(tmp_path / "dev" / "staff-pc1.p12") in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0 and "Reusing" in second.stdout and password in second.stdout
