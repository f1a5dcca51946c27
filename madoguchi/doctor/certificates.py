"""Certificates: the server chain a phone will see, the staff CA and its CRL."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from madoguchi.certs import CertError, load_crl_serials
from madoguchi.doctor import Context, Result, Results, check, fail, ok, warn

SERVER_WARN_DAYS = 21   # ACME renews at 30 days left; 21 means renewal is failing
STAFF_CA_WARN_DAYS = 90
CRL_WARN_DAYS = 7       # the MadoguchiStaffCrlExpiring alert fires at 3


def _days_left(when: dt.datetime) -> float:
    return (when - dt.datetime.now(dt.UTC)).total_seconds() / 86400


def _expiry(what: str, cert: x509.Certificate, warn_days: float, renew: str) -> Result:
    left = _days_left(cert.not_valid_after_utc)
    date = cert.not_valid_after_utc.date().isoformat()
    if cert.not_valid_before_utc > dt.datetime.now(dt.UTC):
        return fail(f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}",
                    "check the clock (timedatectl) or the certificate")
    if left <= 0:
        return fail(f"{what} expired on {date}", renew)
    if left < warn_days:
        return warn(f"{what} expires on {date} ({left:.0f} days left)", renew)
    return ok(f"{what} valid until {date} ({left:.0f} days)")


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake in memory, as a phone would do it (raises ssl.SSLError)."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"cli": False, "srv": False}
    for _ in range(20):
        for name, end in (("cli", cli), ("srv", srv)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise ssl.SSLError("the handshake did not finish")


@check("certificates.server")
def server_certificate(ctx: Context) -> Results:
    tls = ctx.cfg.tls
    if not tls.server_cert or not tls.server_key:
        return fail("[tls] server_cert/server_key are not set (only serve --dev makes a "
                    "development certificate)",
                    "set them to your public CA's certificate chain (fullchain.pem) and key")
    host = urlsplit(ctx.cfg.server.public_url).hostname or ""
    try:
        chain = x509.load_pem_x509_certificates(Path(tls.server_cert).read_bytes())
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tls.server_cert, tls.server_key)
    except FileNotFoundError as exc:
        return fail(f"{exc.filename} does not exist", "copy the certificate and key there")
    except PermissionError as exc:
        return fail(f"{exc.filename} is not readable by this user",
                    "chown madoguchi: the file (key: mode 600)")
    except (ValueError, ssl.SSLError) as exc:
        return fail(f"{tls.server_cert} / {tls.server_key} do not load as a PEM chain and its "
                    f"key ({getattr(exc, 'reason', None) or type(exc).__name__})",
                    "the key must belong to the first certificate of the chain file")
    except OSError as exc:  # after ssl.SSLError, which is an OSError too
        return fail(f"cannot read {exc.filename or tls.server_cert} ({exc.strerror})",
                    "point [tls] server_cert/server_key at the PEM files")
    results = [_expiry(f"server certificate {chain[0].subject.rfc4514_string()}", chain[0],
                       SERVER_WARN_DAYS, "renew it (certbot renew) and restart madoguchi")]
    if not host:
        return [*results, fail("public_url has no host name to verify the certificate for",
                               'set [server] public_url = "https://<name>"')]
    client = ssl.create_default_context()  # the system's CAs (SSL_CERT_FILE if set)
    try:
        handshake(server, client, host)
    except ssl.SSLCertVerificationError as exc:
        results.append(fail(
            f"a phone would refuse the certificate for {host}: {exc.verify_message}",
            "use a certificate from a public CA that names this host, and put the "
            "intermediate certificates after it in the file (fullchain.pem)"))
    except ssl.SSLError as exc:
        results.append(fail(f"TLS handshake for {host} failed: {exc.reason or exc}",
                            "check the certificate chain file and key"))
    else:
        results.append(ok(f"chain of {len(chain)} verifies for {host} against the system's "
                          "trusted CAs"))
    return results


@check("certificates.staff_ca")
def staff_ca(ctx: Context) -> Result:
    path = ctx.cfg.tls.staff_ca
    if not path:
        return fail("[tls] staff_ca is not set (only serve --dev makes a development CA)",
                    "madoguchi certs init, then set [tls] staff_ca/staff_crl")
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        return fail(f"cannot read {path} ({exc.strerror})", "madoguchi certs init")
    except ValueError:
        return fail(f"{path} is not a PEM certificate", "madoguchi certs init")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return fail(f"{path} is not a CA certificate", "point [tls] staff_ca at staff-ca.pem")
    return _expiry("staff CA", cert, STAFF_CA_WARN_DAYS,
                   "make a new staff CA (madoguchi certs init) and reissue every office PC")


@check("certificates.crl")
def staff_crl(ctx: Context) -> Result:
    tls = ctx.cfg.tls
    fix = "madoguchi certs crl (re-signs it; the server reloads it while running)"
    if not tls.staff_crl:
        return fail("[tls] staff_crl is not set: a revoked office PC could still connect",
                    "set it to the staff-crl.pem written by madoguchi certs init")
    if not tls.staff_ca:
        return fail("the CRL cannot be checked without [tls] staff_ca", "madoguchi certs init")
    try:
        pem = Path(tls.staff_crl).read_bytes()
        crl = x509.load_pem_x509_crl(pem)
        revoked = load_crl_serials(pem, x509.load_pem_x509_certificate(
            Path(tls.staff_ca).read_bytes()))
    except OSError as exc:
        return fail(f"cannot read {exc.filename} ({exc.strerror})", fix)
    except (ValueError, CertError) as exc:
        return fail(f"{tls.staff_crl} is not a CRL signed by the staff CA "
                    f"({exc if isinstance(exc, CertError) else 'not PEM'})", fix)
    nxt = crl.next_update_utc
    if nxt is None:
        return fail("the CRL has no next update", fix)
    left = _days_left(nxt)
    if left <= 0:
        return fail(f"the CRL's next update {nxt.date().isoformat()} has passed: every "
                    "office PC is refused", fix)
    summary = f"next update {nxt.date().isoformat()} ({left:.0f} days), {len(revoked)} revoked"
    return warn(f"CRL {summary}", fix) if left < CRL_WARN_DAYS else ok(f"CRL {summary}")
