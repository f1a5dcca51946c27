"""Certificates: the deployment's staff CA (client certificates for office PCs, CRL) and
the development PKI made by ``madoguchi certs dev``.

Two separate trust chains: the *server* certificate (which may come from a public CA in
production, paths ``[tls] server_cert``/``server_key``) and the *staff CA*, which only
issues client certificates and is the only CA the staff listener trusts.

Only ``cryptography`` is used. Every issued client certificate is recorded in
``index.json`` next to the CA certificate, so it can be listed, revoked and renewed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.UTC
DEFAULT_CLIENT_DAYS = 365
CA_DAYS = 3650
SERVER_DAYS = 397  # browsers' limit for server certificates
CRL_DAYS = 400  # CRL nextUpdate; every CA operation re-signs the CRL
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789"

STAFF_CA_CERT = "staff-ca.pem"
STAFF_CA_KEY = "staff-ca.key"
STAFF_CRL = "staff-crl.pem"
INDEX_FILE = "index.json"


class CertError(RuntimeError):
    """A certificate operation failed (clear message, no secrets inside)."""


# ---------------------------------------------------------------------------- helpers


def serial_hex(serial: int) -> str:
    """The canonical text form of a serial number: lowercase hex, no separators."""
    return format(serial, "x")


def normalize_serial(text: str) -> str:
    """Accept ``3F:2A..``, ``0x3f2a``, ``3f2a`` → ``3f2a``; raises ValueError otherwise."""
    cleaned = text.strip().lower().replace(":", "")
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError("not a hexadecimal serial number")
    return serial_hex(int(cleaned, 16))


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def generate_password(groups: int = 4, size: int = 5) -> str:
    """A readable random password (about 114 bits with the defaults)."""
    return "-".join("".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(size))
                    for _ in range(groups))


def same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError as exc:
        raise CertError(f"certificate file not found: {path}") from exc
    except ValueError as exc:
        raise CertError(f"not a PEM certificate: {path}") from exc


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"key file not found: {path}") from exc
    except (ValueError, TypeError) as exc:
        raise CertError(f"not an unencrypted PEM private key: {path}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"unsupported key type in {path} (expected an EC key)")
    return key


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name: str, org: str, days: int
             ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    name = _name(common_name, org)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject: x509.Name,
          key: ec.EllipticCurvePrivateKey, not_before: dt.datetime, not_after: dt.datetime,
          eku: x509.ObjectIdentifier, san: x509.SubjectAlternativeName | None = None
          ) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def p12_bytes(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
              ca_cert: x509.Certificate, password: str, compat: bool = False) -> bytes:
    """A password-protected PKCS#12 bundle (AES-256/SHA-256; ``compat``: 3DES/SHA-1 for
    old Windows/macOS key stores)."""
    algo = (pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC if compat
            else pkcs12.PBES.PBESv2SHA256AndAES256CBC)
    mac = hashes.SHA1() if compat else hashes.SHA256()
    enc = (serialization.PrivateFormat.PKCS12.encryption_builder()
           .kdf_rounds(50000).key_cert_algorithm(algo).hmac_hash(mac)
           .build(password.encode()))
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, [ca_cert], enc)


# ---------------------------------------------------------------------------- staff CA


@dataclass
class CertRecord:
    """One issued client certificate, as kept in the CA's index."""

    serial: str
    name: str
    fingerprint_sha256: str
    not_before: str
    not_after: str
    issued_at: str
    file: str = ""
    revoked_at: str | None = None
    revocation_reason: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: dt.datetime | None = None) -> bool:
        return dt.datetime.fromisoformat(self.not_after) <= (now or _now())

    def status(self, now: dt.datetime | None = None) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(now) else "valid"


@dataclass
class IssuedCert:
    """The result of issuing: the record, the bundle path and its password."""

    record: CertRecord
    p12_path: Path | None
    p12_password: str
    cert: x509.Certificate = field(repr=False)
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def serial(self) -> str:
        return self.record.serial

    @property
    def fingerprint(self) -> str:
        return self.record.fingerprint_sha256

    def write_pem(self, cert_path: Path, key_path: Path) -> None:
        """Also write the certificate and key as PEM (tests, curl)."""
        _write_public(cert_path, _cert_pem(self.cert))
        _write_private(key_path, _key_pem(self.key))


class StaffCA:
    """The deployment's staff CA: issues office-PC client certificates, keeps the CRL."""

    def __init__(self, cert_path: Path, key_path: Path, crl_path: Path,
                 index_path: Path | None = None) -> None:
        self.cert_path = Path(cert_path)
        self.key_path = Path(key_path)
        self.crl_path = Path(crl_path)
        self.index_path = Path(index_path) if index_path else self.cert_path.parent / INDEX_FILE
        self.cert = load_cert(self.cert_path)
        self.key = load_key(self.key_path)
        if not same_public_key(self.cert, self.key):
            raise CertError(f"{self.key_path} is not the key of {self.cert_path}")

    # -- creation

    @classmethod
    def in_dir(cls, directory: Path) -> StaffCA:
        d = Path(directory)
        return cls(d / STAFF_CA_CERT, d / STAFF_CA_KEY, d / STAFF_CRL)

    @classmethod
    def exists(cls, cert_path: Path, key_path: Path) -> bool:
        return Path(cert_path).exists() and Path(key_path).exists()

    @classmethod
    def init(cls, cert_path: Path, key_path: Path, crl_path: Path,
             name: str = "Madoguchi Staff CA", org: str = "Madoguchi",
             days: int = CA_DAYS) -> StaffCA:
        """Create a new CA (refuses to overwrite an existing one) and an empty CRL."""
        cert_path, key_path, crl_path = Path(cert_path), Path(key_path), Path(crl_path)
        if cert_path.exists() or key_path.exists():
            raise CertError(f"a CA already exists at {cert_path}; refusing to overwrite it")
        cert, key = _make_ca(name, org, days)
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, _cert_pem(cert))
        ca = cls(cert_path, key_path, crl_path)
        if not ca.index_path.exists():
            ca._save_index([])
        ca.write_crl()
        return ca

    # -- index

    def records(self) -> list[CertRecord]:
        if not self.index_path.exists():
            return []
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            return [CertRecord(**item) for item in data.get("certs", [])]
        except (ValueError, TypeError) as exc:
            raise CertError(f"the certificate index {self.index_path} is damaged") from exc

    def _save_index(self, records: Iterable[CertRecord]) -> None:
        body = {"version": 1, "ca_fingerprint_sha256": fingerprint_sha256(self.cert),
                "certs": [asdict(r) for r in records]}
        _write_private(self.index_path,
                       json.dumps(body, indent=1, ensure_ascii=False).encode("utf-8"))

    def find(self, serial_or_name: str) -> list[CertRecord]:
        """Records whose serial or name matches (a name may match several)."""
        recs = self.records()
        by_name = [r for r in recs if r.name == serial_or_name]
        if by_name:
            return by_name
        try:
            serial = normalize_serial(serial_or_name)
        except ValueError:
            return []
        return [r for r in recs if r.serial == serial]

    # -- issuing

    def issue(self, name: str, days: int = DEFAULT_CLIENT_DAYS, out: Path | None = None,
              password: str | None = None, not_before: dt.datetime | None = None,
              compat: bool = False) -> IssuedCert:
        """Issue an office-PC client certificate; writes ``out`` (.p12, mode 0600) if given.

        ``not_before`` (default now − 5 min) lets tests make already-expired certificates.
        """
        validate_cert_name(name)
        if days <= 0:
            raise CertError("validity must be at least one day")
        start = (not_before or (_now() - dt.timedelta(minutes=5))).astimezone(UTC)
        end = min(start + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        key = _new_key()
        cert = _leaf(self.cert, self.key, _name(name, "Madoguchi staff PC"), key, start, end,
                     ExtendedKeyUsageOID.CLIENT_AUTH)
        password = password or generate_password()
        p12_path = Path(out) if out else None
        if p12_path is not None:
            _write_private(p12_path, p12_bytes(name, cert, key, self.cert, password, compat))
        rec = CertRecord(serial=serial_hex(cert.serial_number), name=name,
                         fingerprint_sha256=fingerprint_sha256(cert),
                         not_before=cert.not_valid_before_utc.isoformat(),
                         not_after=cert.not_valid_after_utc.isoformat(),
                         issued_at=_now().isoformat(),
                         file=str(p12_path.resolve()) if p12_path else "")
        self._save_index([*self.records(), rec])
        return IssuedCert(rec, p12_path, password, cert, key)

    def revoke(self, serial_or_name: str, reason: str = "unspecified") -> list[CertRecord]:
        """Revoke by serial or name (every active certificate of that name); rewrites the CRL.

        Returns the newly revoked records; raises CertError if nothing matches.
        """
        matches = self.find(serial_or_name)
        if not matches:
            raise CertError(f"no issued certificate with serial or name {serial_or_name!r}")
        targets = {r.serial for r in matches if not r.revoked}
        now = _now().isoformat()
        records = self.records()
        changed = []
        for r in records:
            if r.serial in targets:
                r.revoked_at = now
                r.revocation_reason = reason
                changed.append(r)
        if changed:
            self._save_index(records)
            self.write_crl()
        return changed

    def renew(self, name: str, days: int | None = None, out: Path | None = None,
              revoke_old: bool = False, compat: bool = False) -> IssuedCert:
        """A new certificate (new key) for an existing name; the old one stays valid until
        it expires unless ``revoke_old``."""
        current = [r for r in self.records() if r.name == name and not r.revoked]
        if not current:
            raise CertError(f"no active certificate named {name!r} to renew")
        if days is None:
            last = max(current, key=lambda r: r.issued_at)
            span = (dt.datetime.fromisoformat(last.not_after)
                    - dt.datetime.fromisoformat(last.not_before))
            days = max(1, round(span.total_seconds() / 86400))
        issued = self.issue(name, days=days, out=out, compat=compat)
        if revoke_old:
            for r in current:
                self.revoke(r.serial, reason="superseded")
        return issued

    # -- CRL

    def revoked_serials(self) -> list[tuple[int, dt.datetime, str]]:
        out = []
        for r in self.records():
            if r.revoked_at:
                out.append((int(r.serial, 16), dt.datetime.fromisoformat(r.revoked_at),
                            r.revocation_reason))
        return out

    def write_crl(self, days: int = CRL_DAYS) -> x509.CertificateRevocationList:
        """Sign and write the CRL (atomically); the CRL number increases. thisUpdate is
        set 5 minutes back so a verifier whose clock lags a little accepts it."""
        now = _now() - dt.timedelta(minutes=5)
        number = 1
        if self.crl_path.exists():
            try:
                old = x509.load_pem_x509_crl(self.crl_path.read_bytes())
                ext = old.extensions.get_extension_for_class(x509.CRLNumber)
                number = ext.value.crl_number + 1
            except (ValueError, x509.ExtensionNotFound):
                pass
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.cert.subject)
                   .last_update(now).next_update(now + dt.timedelta(days=days))
                   .add_extension(x509.CRLNumber(number), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        for serial, when, _reason in self.revoked_serials():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(when).build())
        crl = builder.sign(self.key, hashes.SHA256())
        _write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        return crl


def validate_cert_name(name: str) -> None:
    if not name or len(name) > 64 or any(c in name for c in "/\\\0\n\r\t") or name != name.strip():
        raise CertError("certificate name: 1–64 characters, no slashes or control characters")


def load_crl_serials(crl_pem: bytes, ca_cert: x509.Certificate) -> set[str]:
    """Revoked serials of a CRL after checking that ``ca_cert`` signed it."""
    crl = x509.load_pem_x509_crl(crl_pem)
    ca_key = ca_cert.public_key()
    if not isinstance(ca_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise CertError("unsupported staff CA key type")
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_key):
        raise CertError("the CRL is not signed by the staff CA")
    return {serial_hex(r.serial_number) for r in crl}


# ---------------------------------------------------------------------------- dev PKI


@dataclass
class DevCerts:
    """Paths of a development PKI (``madoguchi certs dev DIR``) and the .p12 password."""

    dir: Path
    ca: Path            # ca.pem: the development *server* CA (trust it in a browser / client)
    ca_key: Path
    server_cert: Path   # server.pem: localhost, 127.0.0.1, ::1
    server_key: Path
    staff_ca: Path      # staff-ca.pem: the separate CA of staff client certificates
    staff_ca_key: Path
    staff_crl: Path
    client_p12: Path    # staff-pc1.p12
    client_cert: Path   # staff-pc1.pem (tests, curl)
    client_key: Path    # staff-pc1.key
    p12_password: str
    client_name: str = "staff-pc1"
    created: bool = False  # False when everything was reused

    def tls_config(self) -> dict[str, str]:
        """The ``[tls]`` configuration values for this PKI."""
        return {"server_cert": str(self.server_cert), "server_key": str(self.server_key),
                "staff_ca": str(self.staff_ca), "staff_ca_key": str(self.staff_ca_key),
                "staff_crl": str(self.staff_crl)}

    def as_dict(self) -> dict[str, Any]:
        out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return out


def _server_cert_ok(cert_path: Path, key_path: Path, ca: x509.Certificate) -> bool:
    try:
        cert = load_cert(cert_path)
        key = load_key(key_path)
    except CertError:
        return False
    fresh = cert.not_valid_after_utc > _now() + dt.timedelta(days=30)
    return fresh and cert.issuer == ca.subject and same_public_key(cert, key)


def issue_server_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                      hosts: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
                      days: int = SERVER_DAYS
                      ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = _new_key()
    now = _now()
    first = next(iter(hosts), "localhost")
    cert = _leaf(ca_cert, ca_key, _name(first, "Madoguchi development server"), key,
                 now - dt.timedelta(minutes=5), now + dt.timedelta(days=days),
                 ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names))
    return cert, key


def make_dev_certs(directory: Path, client_name: str = "staff-pc1") -> DevCerts:
    """Create (or reuse) a development PKI in ``directory``. Idempotent: existing, valid
    files are kept; the .p12 password is kept in ``<client>.p12.password`` (0600)."""
    d = Path(directory).expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    created = False

    ca_path, ca_key_path = d / "ca.pem", d / "ca.key"
    if StaffCA.exists(ca_path, ca_key_path):
        server_ca, server_ca_key = load_cert(ca_path), load_key(ca_key_path)
    else:
        server_ca, server_ca_key = _make_ca("Madoguchi Development Server CA", "Madoguchi", CA_DAYS)
        _write_private(ca_key_path, _key_pem(server_ca_key))
        _write_public(ca_path, _cert_pem(server_ca))
        created = True

    server_path, server_key_path = d / "server.pem", d / "server.key"
    if not _server_cert_ok(server_path, server_key_path, server_ca):
        cert, key = issue_server_cert(server_ca, server_ca_key)
        _write_private(server_key_path, _key_pem(key))
        _write_public(server_path, _cert_pem(cert))
        created = True

    staff_ca_path, staff_key_path, crl_path = d / STAFF_CA_CERT, d / STAFF_CA_KEY, d / STAFF_CRL
    if StaffCA.exists(staff_ca_path, staff_key_path):
        staff = StaffCA(staff_ca_path, staff_key_path, crl_path)
        if not _crl_fresh(crl_path):
            staff.write_crl()
    else:
        staff = StaffCA.init(staff_ca_path, staff_key_path, crl_path,
                             name="Madoguchi Development Staff CA")
        created = True

    p12 = d / f"{client_name}.p12"
    pw_file = d / f"{client_name}.p12.password"
    cert_pem, key_pem = d / f"{client_name}.pem", d / f"{client_name}.key"
    if not _client_ok(staff, p12, pw_file, cert_pem, key_pem):
        issued = staff.issue(client_name, out=p12)
        issued.write_pem(cert_pem, key_pem)
        _write_private(pw_file, (issued.p12_password + "\n").encode())
        created = True
    password = pw_file.read_text(encoding="utf-8").strip()
    return DevCerts(dir=d, ca=ca_path, ca_key=ca_key_path, server_cert=server_path,
                    server_key=server_key_path, staff_ca=staff_ca_path,
                    staff_ca_key=staff_key_path, staff_crl=crl_path, client_p12=p12,
                    client_cert=cert_pem, client_key=key_pem, p12_password=password,
                    client_name=client_name, created=created)


def _crl_fresh(path: Path, days: int = 30) -> bool:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return False
    nxt = crl.next_update_utc
    return nxt is not None and nxt > _now() + dt.timedelta(days=days)


def _client_ok(staff: StaffCA, p12: Path, pw_file: Path, cert_pem: Path, key_pem: Path) -> bool:
    if not (p12.exists() and pw_file.exists() and cert_pem.exists() and key_pem.exists()):
        return False
    try:
        cert = load_cert(cert_pem)
        password = pw_file.read_text(encoding="utf-8").strip()
        pkcs12.load_key_and_certificates(p12.read_bytes(), password.encode())
    except (CertError, ValueError):
        return False
    serial = serial_hex(cert.serial_number)
    rec = [r for r in staff.records() if r.serial == serial]
    return (cert.issuer == staff.cert.subject and bool(rec) and not rec[0].revoked
            and cert.not_valid_after_utc > _now() + dt.timedelta(days=7))
