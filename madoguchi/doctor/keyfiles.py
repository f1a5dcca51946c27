"""Key files: present where needed, readable by the service user only, never beside the
recordings (a copy of the recording folder must stay unreadable)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from madoguchi.doctor import Context, Result, Results, check, fail, ok


def _private(label: str, path: Path, created_on_start: bool = False) -> Result:
    """A secret file: readable by us, no group/other permission bits."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if created_on_start:
            return ok(f"{label} {path} is created (0600) at the first start")
        return fail(f"{label} {path} does not exist", "create it (see docs/deploy.md)")
    except PermissionError:
        return fail(f"{label} {path}: a folder on the way is not accessible to this user",
                    "run doctor as the service user; chown the folders to it")
    if not stat.S_ISREG(st.st_mode):
        return fail(f"{label} {path} is not a file", "point the setting at the key file")
    if not os.access(path, os.R_OK):
        return fail(f"{label} {path} is not readable by this user",
                    f"chown madoguchi:madoguchi {path}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return fail(f"{label} {path} has mode {mode:o}: other users can read it",
                    f"chmod 600 {path}")
    return ok(f"{label} {path} (mode {mode:o})")


def _folder(label: str, path: Path) -> Result:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return ok(f"{label} {path} is created (0700) at the first start")
    except PermissionError:
        return fail(f"{label} {path} is not accessible to this user", f"chown madoguchi {path}")
    if mode & 0o077:
        return fail(f"{label} {path} has mode {mode:o}: other users can list or read it",
                    f"chmod 700 {path}")
    return ok(f"{label} {path} (mode {mode:o})")


@check("keys.kek")
def key_encryption_key(ctx: Context) -> Results:
    from recorder.datakey import KeyEncryptionKey, KeyError_

    rc = ctx.cfg.recording
    if not rc.enabled:
        return ok("recording is off: no key-encryption key needed")
    fix = ("write 64 hex characters (python3 -c 'import os; print(os.urandom(32).hex())') "
           "to a file outside the recording folder, chmod 600, set [recording] kek_file")
    try:
        KeyEncryptionKey.load(rc.kek_file, rc.kek_env)
    except KeyError_ as exc:
        return fail(f"key-encryption key not usable: {exc}", fix)
    if os.environ.get(rc.kek_env):
        return ok(f"key-encryption key from the environment variable {rc.kek_env}")
    path = Path(rc.kek_file).resolve()
    if path.is_relative_to(ctx.cfg.recording_dir.resolve()):
        return fail(f"key-encryption key {path} is inside the recording folder", fix)
    return _private("key-encryption key", path)


@check("keys.files")
def key_files(ctx: Context) -> Results:
    """Every other secret: TLS keys, JWT, DLR and phone keys, the secrets folder."""
    from signalling.phone import phone_key_path
    from signalling.sms.dlr import dlr_secret_path

    cfg = ctx.cfg
    out = [_folder("data folder", cfg.data_path()), _folder("secrets folder", cfg.secrets_dir)]
    if cfg.tls.server_key:
        out.append(_private("server key", Path(cfg.tls.server_key)))
    if cfg.tls.staff_ca_key:
        out.append(_private("staff CA key", Path(cfg.tls.staff_ca_key)))
    jwt = Path(cfg.links.secret_file) if cfg.links.secret_file else cfg.secrets_dir / "jwt.key"
    out.append(_private("signalling JWT key", jwt, created_on_start=True))
    out.append(_private("phone-number key", phone_key_path(cfg), created_on_start=True))
    if cfg.turn.enabled:
        out.append(_private("TURN secret", cfg.turn_secret_path, created_on_start=True))
    if cfg.sms.provider == "kannel":
        out.append(_private("DLR secret", dlr_secret_path(cfg), created_on_start=True))
    return out
