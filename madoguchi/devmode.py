"""Development mode: ``madoguchi serve --dev`` or ``[server] development = true``.

Only in this mode does the server fill in what production must configure, and skip the
start-up checks of ``madoguchi doctor`` (madoguchi/doctor/). With no ``[tls]`` paths, a
development PKI is made (or reused) in ``<data_dir>/certs``.
With no configuration file at all and no key-encryption key, a development KEK is made
in ``<data_dir>/secrets`` (never in the recording folder). A configuration file that
enables recording without a KEK is refused at start-up instead: production must say
where its key lives.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from madoguchi.config import Config
from madoguchi.logs import event

log = logging.getLogger(__name__)


def apply_dev_defaults(cfg: Config, has_config_file: bool) -> list[str]:
    """Fill in development TLS and KEK settings; returns what was filled (for the log)."""
    done: list[str] = []
    if not cfg.tls.server_cert and not cfg.tls.staff_ca:
        from madoguchi.certs import make_dev_certs
        certs = make_dev_certs(cfg.data_path("certs"))
        for key, value in certs.tls_config().items():
            setattr(cfg.tls, key, value)
        done.append("development certificates in " + str(certs.dir))
    kek_configured = bool(cfg.recording.kek_file) or bool(os.environ.get(cfg.recording.kek_env))
    if cfg.recording.enabled and not kek_configured and not has_config_file:
        path = cfg.secrets_dir / "dev-kek.hex"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
        cfg.recording.kek_file = str(Path(path))
        done.append("development key-encryption key in " + str(path))
    loopback_only = all(a.split("=")[-1].strip().startswith("127.")
                        for a in cfg.sfu.host_addresses)
    if loopback_only and not cfg.sfu.allowed_candidate_networks:
        # browsers on this machine offer 127.0.0.1; a deployment never allows loopback
        cfg.sfu.allowed_candidate_networks = ["127.0.0.1/32"]
        done.append("ICE candidates on 127.0.0.1 accepted (loopback development server)")
    for what in done:
        event(log, "development_default", logging.WARNING, detail=what)
    return done
