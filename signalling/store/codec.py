"""Field-level checks and encodings shared by the store implementations."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, get_type_hints

from signalling.store.interfaces import STATES, Consultation, StoreError

CONSULTATION_TYPES: dict[str, Any] = get_type_hints(Consultation)
CONSULTATION_FIELDS = tuple(f.name for f in dataclasses.fields(Consultation))
_LOCK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def apply_changes(c: Consultation, changes: dict[str, Any]) -> Consultation:
    """A copy of ``c`` with ``changes`` applied; ``times`` is merged, never replaced."""
    check_changes(changes)
    data = c.to_dict()
    for key, value in changes.items():
        if key == "times":
            data["times"] = {**data["times"], **{str(k): float(v) for k, v in value.items()}}
        else:
            data[key] = value
    return Consultation.from_dict(data)


def check_changes(changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key not in CONSULTATION_TYPES or key == "id":
            raise StoreError(f"cannot change consultation field {key!r}")
        typ = CONSULTATION_TYPES[key]
        if key == "times":
            if not isinstance(value, dict) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
                raise StoreError("consultation times must map a state to epoch seconds")
        elif typ is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise StoreError(f"consultation field {key!r} must be a number")
        elif typ in (str, bool) and not isinstance(value, typ):
            raise StoreError(f"consultation field {key!r} must be {typ.__name__}")
        if key == "state" and value not in STATES:
            raise StoreError(f"unknown consultation state {value!r}")


def check_lock_name(name: str) -> str:
    if not _LOCK_NAME.match(name):
        raise StoreError("lock names are 1-64 characters of A-Z a-z 0-9 _ . -")
    return name


def encode_field(name: str, value: Any) -> str:
    """One consultation field as a Redis hash value (strings raw, others JSON)."""
    if CONSULTATION_TYPES[name] is str:
        return str(value)
    if CONSULTATION_TYPES[name] is bool:
        return "1" if value else "0"
    return json.dumps(value)


def decode_fields(raw: dict[str, str]) -> Consultation:
    """A consultation from its Redis hash (``t:<state>`` fields hold ``times``)."""
    data: dict[str, Any] = {"times": {}}
    for key, value in raw.items():
        if key.startswith("t:"):
            data["times"][key[2:]] = float(value)
            continue
        typ = CONSULTATION_TYPES.get(key)
        if typ is None or key == "times":
            continue
        if typ is str:
            data[key] = value
        elif typ is bool:
            data[key] = value == "1"
        elif typ is float:
            data[key] = float(value)
        elif typ is int:
            data[key] = int(value)
        else:
            data[key] = json.loads(value)
    return Consultation.from_dict(data)


def encode_consultation(c: Consultation) -> list[str]:
    """Flat field/value list for HSET (``times`` expanded into ``t:<state>`` fields)."""
    out: list[str] = []
    for name in CONSULTATION_FIELDS:
        if name == "times":
            continue
        out += [name, encode_field(name, getattr(c, name))]
    for state, when in c.times.items():
        out += [f"t:{state}", repr(float(when))]
    return out


def encode_changes(changes: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in changes.items():
        if name == "times":
            for state, when in value.items():
                out += [f"t:{state}", repr(float(when))]
        else:
            out += [name, encode_field(name, value)]
    return out
