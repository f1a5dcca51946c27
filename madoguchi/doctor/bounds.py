"""Security settings inside sane bounds: a lockout after 1,000 failures, a 4-character
password minimum or an unlimited lookup rate are configuration mistakes, refused at
start-up outside development mode (tests and ``serve --dev`` may use odd values)."""

from __future__ import annotations

from madoguchi.doctor import Context, Result, Results, check, fail, ok, warn

# (section, key, lowest, highest, why)
BOUNDS = (
    ("auth", "password_min_length", 12, 128, "shorter passwords fall to offline guessing"),
    ("auth", "lockout_failures", 3, 20, "the lockout must stop online guessing"),
    ("auth", "lockout_minutes", 5, 24 * 60, "a lockout must slow guessing down"),
    ("auth", "cert_failures_per_minute", 1, 1000, "the per-PC guessing limit"),
    ("auth", "session_idle_minutes", 1, 120, "an unattended staff PC must log out"),
    ("auth", "session_absolute_hours", 1, 24, "a session must end within a day"),
    ("links", "lookups_per_minute", 1, 600, "scanners must be slowed down"),
    ("links", "lifetime_minutes", 1, 24 * 60, "an SMS link is a bearer credential"),
    ("server", "header_timeout_seconds", 1, 120, "slow clients must not hold sockets"),
    ("server", "handshake_timeout_seconds", 1, 60, "slow clients must not hold sockets"),
    ("server", "body_timeout_seconds", 1, 600, "slow clients must not hold sockets"),
)


@check("config.bounds")
def security_bounds(ctx: Context) -> Results:
    out: list[Result] = []
    for section, key, low, high, why in BOUNDS:
        value = getattr(getattr(ctx.cfg, section), key)
        if not low <= value <= high:
            out.append(fail(f"[{section}] {key} = {value} is outside {low}..{high}: {why}",
                            f"set [{section}] {key} between {low} and {high}"))
    server = ctx.cfg.server
    if server.max_connections_per_address > server.max_connections:
        out.append(fail("[server] max_connections_per_address is above max_connections",
                        "lower max_connections_per_address"))
    sms, phone = ctx.cfg.sms, ctx.cfg.phone
    if sms.per_staff_per_hour <= 0 or sms.per_ward_per_day <= 0:
        out.append(warn("an SMS quota is off ([sms] per_staff_per_hour / per_ward_per_day "
                        "= 0): one session can send any number of SMS",
                        "set both quotas above 0"))
    if not phone.allowed_regions:
        out.append(warn("[phone] allowed_regions is empty: SMS links go to any country",
                        'set allowed_regions = ["JP"] (or the countries you serve)'))
    return out or ok("security settings within bounds")


@check("keys.strength")
def secret_strength(ctx: Context) -> Results:
    """Secrets long enough not to be guessed (their files' permissions: keys.files)."""
    from pathlib import Path

    from madoguchi.config import ConfigError
    from signalling.linktoken import load_secret

    cfg = ctx.cfg
    out: list[Result] = []
    jwt = Path(cfg.links.secret_file) if cfg.links.secret_file else cfg.secrets_dir / "jwt.key"
    if jwt.exists():
        try:
            load_secret(jwt)
            out.append(ok(f"signalling secret {jwt} is long enough"))
        except ConfigError as exc:
            out.append(fail(str(exc), f"delete {jwt}: a 32-byte secret is made at the start"))
        except OSError as exc:
            out.append(fail(f"signalling secret {jwt} unreadable ({type(exc).__name__})",
                            f"chown madoguchi {jwt}"))
    token = cfg.operator.bearer_token
    if token and len(token) < 24:
        out.append(fail(f"[operator] bearer_token has {len(token)} characters",
                        "use 24+ random characters (python3 -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))')"))
    return out or ok("no signalling secret yet (made at the first start)")
