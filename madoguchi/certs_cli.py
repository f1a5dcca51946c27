"""``madoguchi certs``: the development PKI and the deployment's staff CA.

    madoguchi certs dev DIR                 development CA, server and staff certificates
    madoguchi certs init [--dir DIR]        create the staff CA (paths from [tls] or DIR)
    madoguchi certs issue NAME [--days 365] [--out FILE]   office-PC .p12 with a password
    madoguchi certs list
    madoguchi certs revoke SERIAL|NAME      the staff listener refuses it (CRL reload)
    madoguchi certs renew NAME [--revoke-old]
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Any

from madoguchi.certs import (
    CRL_DAYS,
    DEFAULT_CLIENT_DAYS,
    STAFF_CA_CERT,
    STAFF_CA_KEY,
    STAFF_CRL,
    CertError,
    StaffCA,
    make_dev_certs,
)
from madoguchi.cli import add_config_option, config_from_args
from madoguchi.config import Config, ConfigError


def register(subparsers: Any) -> None:
    certs = subparsers.add_parser("certs", help="development PKI and the staff client-certificate CA")
    add_config_option(certs)
    sub = certs.add_subparsers(dest="certs_command", metavar="ACTION")

    p = sub.add_parser("dev", help="development CA, localhost server certificate, staff .p12")
    add_config_option(p)
    p.add_argument("dir", type=Path, help="folder (reused when it already holds the files)")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("init", help="create the staff CA and an empty CRL")
    add_config_option(p)
    _dir_option(p)
    p.add_argument("--name", default="Madoguchi Staff CA", help="CA common name")
    p.add_argument("--days", type=int, default=3650, help="CA validity in days")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("issue", help="issue an office-PC client certificate (.p12)")
    add_config_option(p)
    _dir_option(p)
    p.add_argument("name", help="certificate name, e.g. nada-pc3")
    p.add_argument("--days", type=int, default=DEFAULT_CLIENT_DAYS, help="validity in days")
    p.add_argument("--out", type=Path, help="the .p12 file (default <ca dir>/issued/NAME.p12)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the .p12 password from stdin instead of generating one")
    p.add_argument("--compat", action="store_true",
                   help="3DES/SHA-1 .p12 for old Windows/macOS key stores")
    p.set_defaults(func=cmd_issue)

    p = sub.add_parser("list", help="list issued client certificates")
    add_config_option(p)
    _dir_option(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("revoke", help="revoke by serial or name and rewrite the CRL")
    add_config_option(p)
    _dir_option(p)
    p.add_argument("target", metavar="SERIAL|NAME")
    p.add_argument("--reason", default="unspecified")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("renew", help="a new certificate (new key) for an existing name")
    add_config_option(p)
    _dir_option(p)
    p.add_argument("name")
    p.add_argument("--days", type=int, help="validity (default: as the current one)")
    p.add_argument("--out", type=Path)
    p.add_argument("--revoke-old", action="store_true", help="revoke the old one at once")
    p.add_argument("--compat", action="store_true")
    p.set_defaults(func=cmd_renew)

    p = sub.add_parser("crl", help=f"re-sign the CRL (valid {CRL_DAYS} days)")
    add_config_option(p)
    _dir_option(p)
    p.set_defaults(func=cmd_crl)

    certs.set_defaults(func=lambda args: (certs.print_help(), 2)[1])


def _dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path,
                   help="CA folder (default: the [tls] staff_ca paths, else <data_dir>/pki)")


def ca_paths(cfg: Config, directory: Path | None) -> tuple[Path, Path, Path]:
    """(certificate, key, CRL) of the staff CA: --dir, else [tls], else <data_dir>/pki."""
    if directory is not None:
        d = Path(directory)
        return d / STAFF_CA_CERT, d / STAFF_CA_KEY, d / STAFF_CRL
    if cfg.tls.staff_ca:
        cert = Path(cfg.tls.staff_ca)
        key = Path(cfg.tls.staff_ca_key) if cfg.tls.staff_ca_key else cert.parent / STAFF_CA_KEY
        crl = Path(cfg.tls.staff_crl) if cfg.tls.staff_crl else cert.parent / STAFF_CRL
        return cert, key, crl
    d = cfg.data_path("pki")
    return d / STAFF_CA_CERT, d / STAFF_CA_KEY, d / STAFF_CRL


def _open_ca(args: argparse.Namespace) -> tuple[Config, StaffCA]:
    cfg = config_from_args(args)
    cert, key, crl = ca_paths(cfg, args.dir)
    if not StaffCA.exists(cert, key):
        raise CertError(f"no staff CA at {cert}; create it with `madoguchi certs init`")
    return cfg, StaffCA(cert, key, crl)


def _audit(cfg: Config, action: str, **fields: Any) -> None:
    try:
        from madoguchi.clock import SystemClock
        from signalling.audit import AuditLog
        AuditLog(cfg.audit_path, SystemClock(), cfg.audit.keep_days).write(
            action, staff=f"cli:{getpass.getuser()}", **fields)
    except Exception as exc:  # noqa: BLE001 - the certificate operation itself succeeded
        print(f"warning: could not write the audit log: {type(exc).__name__}", file=sys.stderr)


def _run(func: Any, args: argparse.Namespace) -> int:
    try:
        return int(func(args) or 0)
    except (CertError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_dev(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        dev = make_dev_certs(args.dir)
        print(("Created" if dev.created else "Reusing") + f" development certificates in {dev.dir}")
        print(f"  server CA (trust this):    {dev.ca}")
        print(f"  server certificate / key:  {dev.server_cert}  {dev.server_key}")
        print(f"  staff CA / key / CRL:      {dev.staff_ca}  {dev.staff_ca_key}  {dev.staff_crl}")
        print(f"  staff PC certificate:      {dev.client_p12}")
        print(f"  .p12 password:             {dev.p12_password}")
        print("Configuration ([tls]):")
        for k, v in dev.tls_config().items():
            print(f'  {k} = "{v}"')
        return 0
    return _run(go, args)


def cmd_init(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        cfg = config_from_args(args)
        cert, key, crl = ca_paths(cfg, args.dir)
        ca = StaffCA.init(cert, key, crl, name=args.name, days=args.days)
        print(f"Staff CA created: {ca.cert_path}")
        print(f"  key (keep offline if you can): {ca.key_path}")
        print(f"  CRL: {ca.crl_path}")
        print("Configuration ([tls]):")
        print(f'  staff_ca = "{ca.cert_path}"\n  staff_ca_key = "{ca.key_path}"\n'
              f'  staff_crl = "{ca.crl_path}"')
        _audit(cfg, "ca_created", detail=args.name)
        return 0
    return _run(go, args)


def _password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    pw = sys.stdin.readline().rstrip("\n")
    if len(pw) < 8:
        raise CertError(".p12 password: at least 8 characters")
    return pw


def cmd_issue(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        cfg, ca = _open_ca(args)
        out = args.out or ca.cert_path.parent / "issued" / f"{args.name}.p12"
        if out.exists():
            raise CertError(f"{out} exists; choose another --out or remove it")
        issued = ca.issue(args.name, days=args.days, out=out, password=_password(args),
                          compat=args.compat)
        _print_issued(issued)
        _audit(cfg, "cert_issued", cert_serial=issued.serial, detail=args.name)
        return 0
    return _run(go, args)


def _print_issued(issued: Any) -> None:
    r = issued.record
    print(f"Issued {r.name}: serial {r.serial}")
    print(f"  valid until:   {r.not_after}")
    print(f"  sha256:        {r.fingerprint_sha256}")
    print(f"  .p12 file:     {issued.p12_path}")
    print(f"  .p12 password: {issued.p12_password}")
    print("Install the .p12 on the office PC; give the password separately.")


def cmd_list(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        _cfg, ca = _open_ca(args)
        now = dt.datetime.now(dt.UTC)
        rows = ca.records()
        if not rows:
            print("(no certificates issued)")
            return 0
        print(f"{'STATUS':<8} {'NAME':<20} {'NOT AFTER':<26} SERIAL")
        for r in sorted(rows, key=lambda r: (r.name, r.issued_at)):
            print(f"{r.status(now):<8} {r.name:<20} {r.not_after:<26} {r.serial}")
        return 0
    return _run(go, args)


def cmd_revoke(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        cfg, ca = _open_ca(args)
        changed = ca.revoke(args.target, reason=args.reason)
        if not changed:
            print(f"{args.target}: already revoked; CRL unchanged")
            return 0
        for r in changed:
            print(f"Revoked {r.name} (serial {r.serial})")
            _audit(cfg, "cert_revoked", cert_serial=r.serial, detail=r.name)
        print(f"CRL written: {ca.crl_path} (the staff listener reloads it within "
              f"{cfg.tls.crl_reload_seconds} s)")
        return 0
    return _run(go, args)


def cmd_renew(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        cfg, ca = _open_ca(args)
        out = args.out
        if out is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
            out = ca.cert_path.parent / "issued" / f"{args.name}-{stamp}.p12"
        issued = ca.renew(args.name, days=args.days, out=out, revoke_old=args.revoke_old,
                          compat=args.compat)
        _print_issued(issued)
        _audit(cfg, "cert_renewed", cert_serial=issued.serial, detail=args.name)
        if not args.revoke_old:
            print("The previous certificate stays valid until it expires; revoke it with "
                  "`madoguchi certs revoke SERIAL` once the new one is installed.")
        return 0
    return _run(go, args)


def cmd_crl(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        _cfg, ca = _open_ca(args)
        crl = ca.write_crl()
        nxt = crl.next_update_utc.isoformat() if crl.next_update_utc else "-"
        print(f"CRL written: {ca.crl_path} (next update {nxt})")
        return 0
    return _run(go, args)
