"""Operator commands for recordings and their keys (there is no export or download command).

    madoguchi recordings verify CONSULTATION   decrypt in memory, check chain and container
    madoguchi keys rotate [--old-kek-file F]   re-wrap every data key under the current KEK
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from madoguchi.cli import add_config_option, config_from_args
from madoguchi.clock import SystemClock
from madoguchi.config import Config, ConfigError
from recorder.datakey import KeyEncryptionKey, KeyError_, unwrap, wrap
from recorder.layout import LayoutError, check_consultation_id
from recorder.verify import VerifyError, verify_consultation

OLD_KEK_ENV = "MADOGUCHI_OLD_KEK"


def register(subparsers: Any) -> None:
    rec = subparsers.add_parser("recordings", help="check encrypted recordings (no export)")
    add_config_option(rec)
    sub = rec.add_subparsers(dest="recordings_command", metavar="ACTION")
    p = sub.add_parser("verify", help="decrypt a consultation's segments in memory and check "
                                      "the chain and the containers; writes no plaintext")
    add_config_option(p)
    p.add_argument("consultation", help="consultation id")
    p.set_defaults(func=cmd_verify)

    keys = subparsers.add_parser("keys", help="recording key management")
    add_config_option(keys)
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    p = sub.add_parser("rotate", help="re-wrap every stored data key under the configured "
                                      "key-encryption key (segments are not touched)")
    add_config_option(p)
    p.add_argument("--old-kek-file", default="",
                   help=f"file with the previous KEK (or set {OLD_KEK_ENV})")
    p.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    p.set_defaults(func=cmd_rotate)


def _fail(message: str, code: int = 2) -> int:
    print(f"madoguchi: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace) -> tuple[Config, KeyEncryptionKey]:
    cfg = config_from_args(args)
    return cfg, KeyEncryptionKey.load(cfg.recording.kek_file, cfg.recording.kek_env)


async def _with_store(cfg: Config, work: Any) -> Any:
    from signalling.store import open_store
    store = open_store(cfg, SystemClock())
    try:
        return await work(store)
    finally:
        await store.close()


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        check_consultation_id(args.consultation)
        cfg, kek = _load(args)
    except (ConfigError, KeyError_, LayoutError) as exc:
        return _fail(str(exc))

    async def work(store: Any) -> Any:
        return await verify_consultation(store, kek, cfg.recording_dir, args.consultation)

    try:
        report = asyncio.run(_with_store(cfg, work))
    except VerifyError as exc:
        print(f"consultation {args.consultation}: cannot verify: {exc}")
        return 1
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def cmd_rotate(args: argparse.Namespace) -> int:
    try:
        cfg, kek = _load(args)
        old: KeyEncryptionKey | None = None
        if args.old_kek_file or os.environ.get(OLD_KEK_ENV):
            old = KeyEncryptionKey.load(args.old_kek_file, OLD_KEK_ENV)
    except (ConfigError, KeyError_) as exc:
        return _fail(str(exc))
    result = asyncio.run(_with_store(cfg, lambda store: rotate_keys(store, kek, old,
                                                                    dry_run=args.dry_run)))
    done, current, failed = result
    verb = "would re-wrap" if args.dry_run else "re-wrapped"
    print(f"{verb} {done} data key(s) under key-encryption key {kek.key_id}; "
          f"{current} already current; {len(failed)} failed")
    for line in failed:
        print(f"problem: {line}")
    return 1 if failed else 0


async def rotate_keys(store: Any, kek: KeyEncryptionKey, old: KeyEncryptionKey | None,
                      *, dry_run: bool = False) -> tuple[int, int, list[str]]:
    """Re-wrap every data key under ``kek``: (re-wrapped, already current, problems)."""
    done = current = 0
    failed: list[str] = []
    now = time.time()
    for record in await store.list_data_keys():
        cid = record.consultation_id
        if record.key_id == kek.key_id:
            current += 1
            continue
        if old is None or record.key_id != old.key_id:
            failed.append(f"consultation {cid}: wrapped under key-encryption key "
                          f"{record.key_id}, which was not given (--old-kek-file)")
            continue
        try:
            data_key = unwrap(old, cid, record.wrapped)
        except (KeyError_, ValueError):
            failed.append(f"consultation {cid}: does not unwrap with the old key-encryption key")
            continue
        if not dry_run:
            # Never resurrect a key retention deleted meanwhile (crypto-shredding): a
            # compare-and-set that only replaces the wrapping of a key still there.
            if record.deadline <= now or not await store.rewrap_data_key(
                    cid, record.key_id, kek.key_id, wrap(kek, cid, data_key)):
                continue
        done += 1
    return done, current, failed
