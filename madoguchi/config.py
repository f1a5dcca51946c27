"""Configuration: TOML file (optional) + MADOGUCHI_<SECTION>_<KEY> environment overrides.

Every key is documented in config/default.toml; the dataclasses below are the single
source of defaults, and a test checks that both agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MADOGUCHI_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class ServerConfig:
    public_url: str = "https://localhost:8443"
    citizen_host: str = "127.0.0.1"
    citizen_port: int = 8443
    staff_host: str = "127.0.0.1"
    staff_port: int = 8444
    staff_public_url: str = ""
    data_dir: str = "var"
    web_root: str = ""
    max_message_bytes: int = 65536
    max_call_minutes: float = 180.0
    development: bool = False
    header_timeout_seconds: float = 15.0
    handshake_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 500
    max_connections_per_address: int = 100


@dataclass
class TlsConfig:
    server_cert: str = ""
    server_key: str = ""
    staff_ca: str = ""
    staff_ca_key: str = ""
    staff_crl: str = ""
    crl_reload_seconds: int = 10
    staff_allow_tls12: bool = False


@dataclass
class StoreConfig:
    backend: str = "sqlite"
    sqlite_path: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    phone_key_file: str = ""
    redis_persistence_rotated: bool = False


@dataclass
class LinksConfig:
    lifetime_minutes: float = 30.0
    signalling_token_seconds: int = 300
    secret_file: str = ""
    lookups_per_minute: int = 30
    reconnect_grace_minutes: float = 10.0
    citizen_sockets: int = 2
    limiter_max_addresses: int = 10000
    citizen_offers_per_minute: int = 12


@dataclass
class PhoneConfig:
    region: str = "JP"
    allowed_regions: list[str] = field(default_factory=lambda: ["JP"])


@dataclass
class SmsConfig:
    provider: str = "console"
    template: str = "【窓口】映像相談はこちら（{minutes}分有効）{url}"
    sender_id: str = "Madoguchi"
    kannel_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    kannel_username: str = ""
    kannel_password: str = ""
    dlr_base_url: str = ""
    dlr_secret_file: str = ""
    timeout_seconds: float = 5.0
    retries: int = 2
    per_staff_per_hour: int = 30
    per_ward_per_day: int = 300


@dataclass
class SfuConfig:
    host_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    # Each entry: "stun:…" (string form, kept for old files) or a table
    # {urls = "…" | ["…"], username = "…", credential = "…"}
    ice_servers: list[str | dict[str, Any]] = field(default_factory=list)
    video_codec: str = "VP8"
    udp_rcvbuf_bytes: int = 4 * 1024 * 1024
    use_uvloop: bool = True
    max_video_kbps: int = 1500
    citizen_police_kbps: int = 4000
    transport_cc: bool = True
    peer_timeout_seconds: float = 30.0
    allowed_candidate_networks: list[str] = field(default_factory=list)
    max_candidates_per_section: int = 10
    udp_port_min: int = 0
    udp_port_max: int = 0


@dataclass
class TurnConfig:
    enabled: bool = False
    urls: list[str] = field(default_factory=list)
    host: str = "localhost"
    port: int = 3478
    tls_port: int = 443
    relay_min_port: int = 49152
    relay_max_port: int = 49407
    secret_file: str = ""
    realm: str = "madoguchi"


@dataclass
class RecordingConfig:
    enabled: bool = True
    dir: str = ""
    segment_seconds: float = 4.0
    segment_max_seconds: float = 30.0
    kek_file: str = ""
    kek_env: str = "MADOGUCHI_KEK"
    queue_packets: int = 2000
    max_megabytes: float = 2500.0
    min_free_megabytes: float = 1000.0


@dataclass
class RetentionConfig:
    period_hours: float = 24.0
    interval_seconds: float = 60.0
    embedded: bool = True


@dataclass
class AuthConfig:
    password_min_length: int = 12
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    lockout_failures: int = 5
    lockout_minutes: int = 15
    cert_failures_per_minute: int = 20


@dataclass
class AuditConfig:
    path: str = ""
    keep_days: int = 365


@dataclass
class LogConfig:
    format: str = "json"
    level: str = "INFO"


@dataclass
class OperatorConfig:
    host: str = "127.0.0.1"
    port: int = 9464
    bearer_token: str = ""
    tls: bool = False


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    phone: PhoneConfig = field(default_factory=PhoneConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    sfu: SfuConfig = field(default_factory=SfuConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    log: LogConfig = field(default_factory=LogConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)

    # Derived paths: everything personal lives under data_dir unless configured.
    def data_path(self, *parts: str) -> Path:
        return Path(self.server.data_dir).expanduser().resolve().joinpath(*parts)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.store.sqlite_path) if self.store.sqlite_path else self.data_path("state.db")

    @property
    def recording_dir(self) -> Path:
        return Path(self.recording.dir) if self.recording.dir else self.data_path("recordings")

    @property
    def audit_path(self) -> Path:
        return Path(self.audit.path) if self.audit.path else self.data_path("audit.log")

    @property
    def web_root(self) -> Path:
        return Path(self.server.web_root) if self.server.web_root else REPO_ROOT / "web"

    @property
    def secrets_dir(self) -> Path:
        """Keys that must never sit in the recording folder."""
        return self.data_path("secrets")

    @property
    def turn_secret_path(self) -> Path:
        """coturn's static-auth-secret (hex text), shared with the TURN server."""
        return Path(self.turn.secret_file) if self.turn.secret_file \
            else self.secrets_dir / "turn.key"

    @property
    def turn_urls(self) -> list[str]:
        """TURN URLs given to browsers: ``[turn] urls``, else UDP, TCP and TLS on host."""
        t = self.turn
        return list(t.urls) or [f"turn:{t.host}:{t.port}?transport=udp",
                                f"turn:{t.host}:{t.port}?transport=tcp",
                                f"turns:{t.host}:{t.tls_port}?transport=tcp"]


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ConfigError(f"{where}: expected a boolean, got {value!r}")
    try:
        if origin is list and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if typ is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if typ is int:
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if typ is float:
            number = float(value)
            if not math.isfinite(number):  # nan would pass every range check below
                raise ValueError("not a finite number")
            return number
        if typ is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin is list:
            if not isinstance(value, list):
                raise TypeError
            if typ.__args__[0] is str:
                return [str(v) for v in value]
            return [v if isinstance(v, dict) else str(v) for v in value]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r} as {getattr(typ, '__name__', typ)}") from exc
    return value


def _apply(section_obj: Any, values: dict[str, Any], section: str) -> None:
    hints = get_type_hints(type(section_obj))
    for key, raw in values.items():
        if key not in hints:
            raise ConfigError(f"unknown configuration key [{section}] {key}")
        setattr(section_obj, key, _coerce(raw, hints[key], f"[{section}] {key}"))


def load_config(path: str | os.PathLike[str] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file, then environment variables; validated."""
    env = os.environ if environ is None else environ
    cfg = Config()
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
        for section, values in data.items():
            if not hasattr(cfg, section) or not isinstance(values, dict):
                raise ConfigError(f"unknown configuration section [{section}]")
            _apply(getattr(cfg, section), values, section)
    for f in dataclasses.fields(cfg):
        section_obj = getattr(cfg, f.name)
        for key in get_type_hints(type(section_obj)):
            name = f"{ENV_PREFIX}{f.name}_{key}".upper()
            if name in env:
                _apply(section_obj, {key: env[name]}, f.name)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    if cfg.retention.period_hours > 24:
        raise ConfigError(
            f"[retention] period_hours = {cfg.retention.period_hours}: the promise is deletion "
            "within 24 hours; values above 24 are refused")
    if cfg.retention.period_hours <= 0:
        raise ConfigError("[retention] period_hours must be positive")
    if cfg.store.backend not in ("sqlite", "redis"):
        raise ConfigError(f"[store] backend must be 'sqlite' or 'redis', not {cfg.store.backend!r}")
    if cfg.sfu.video_codec.upper() not in ("VP8", "H264"):
        raise ConfigError(f"[sfu] video_codec must be VP8 or H264, not {cfg.sfu.video_codec!r}")
    if cfg.sfu.max_video_kbps <= 0 or cfg.sfu.peer_timeout_seconds <= 0:
        raise ConfigError("[sfu] max_video_kbps and peer_timeout_seconds must be positive")
    server = cfg.server
    if min(server.header_timeout_seconds, server.handshake_timeout_seconds,
           server.body_timeout_seconds, server.max_connections,
           server.max_connections_per_address) <= 0:
        raise ConfigError("[server] timeouts and connection caps must be positive")
    _validate_ice(cfg)
    if cfg.log.format not in ("json", "text"):
        raise ConfigError("[log] format must be 'json' or 'text'")
    if cfg.links.lifetime_minutes <= 0:
        raise ConfigError("[links] lifetime_minutes must be positive")
    if cfg.links.citizen_sockets < 1 or cfg.links.citizen_offers_per_minute < 1:
        raise ConfigError("[links] citizen_sockets and citizen_offers_per_minute must be "
                          "at least 1")
    if not 0 < cfg.links.signalling_token_seconds <= 300:
        raise ConfigError("[links] signalling_token_seconds must be between 1 and 300")


def _validate_ice(cfg: Config) -> None:
    from sfu.candidates import parse_networks  # sfu owns the candidate policy
    from signalling.turn import check_ice_server_entries
    try:
        check_ice_server_entries(cfg.sfu.ice_servers)
        parse_networks(cfg.sfu.allowed_candidate_networks)
    except ValueError as exc:
        raise ConfigError(f"[sfu] {exc}") from None
    if cfg.sfu.max_candidates_per_section < 1:
        raise ConfigError("[sfu] max_candidates_per_section must be at least 1")
    lo, hi = cfg.sfu.udp_port_min, cfg.sfu.udp_port_max
    if (lo or hi) and not 1024 <= lo <= hi <= 65535:
        raise ConfigError("[sfu] udp_port_min..udp_port_max must be a range within 1024-65535 "
                          "(both 0: any port)")
    t = cfg.turn
    if t.enabled:
        if not 1 <= t.port <= 65535 or not 1 <= t.tls_port <= 65535:
            raise ConfigError("[turn] port and tls_port must be 1-65535")
        if not 1024 <= t.relay_min_port <= t.relay_max_port <= 65535:
            raise ConfigError("[turn] relay_min_port..relay_max_port must be within 1024-65535")
        for url in cfg.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"[turn] urls: {url!r} is not a turn: or turns: URL")


def as_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return {f.name: dataclasses.asdict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
