"""User-facing errors: each one is printed by the CLI as a single line, with a non-zero exit."""

from __future__ import annotations

import sys

from pydantic import ValidationError


class CnnsweepError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(CnnsweepError):
    """The data path, archive or images cannot be used."""


class ConfigError(CnnsweepError):
    """A training or study setting is invalid."""


def describe_validation_error(error: ValidationError, what: str = "setting") -> str:
    """One line naming the offending field(s), e.g. ``invalid lr=0: must be greater than 0``."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or what
        message = item["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "must be")
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown {what} {field!r}")
        elif "input" in item and not isinstance(item["input"], dict):
            parts.append(f"invalid {field}={item['input']!r}: {message}")
        else:
            parts.append(f"invalid {field}: {message}")
    return "; ".join(parts)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (refused, reset, restarting), as
    opposed to a write it refused. Optuna wraps such errors in StorageInternalError, which it
    also raises for a refused write: what caused it decides."""
    if "sqlalchemy.exc" not in sys.modules:
        return False  # no database was opened: no such error can have been raised
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OperationalError | InterfaceError | DisconnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def first_line(exc: BaseException) -> str:
    """What ``exc`` says, in one line: for a database error, the driver's own first line
    (SQLAlchemy adds the statement and a link on lines of their own)."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
