"""User-facing errors: each one is printed by the CLI as a single line, with a non-zero exit."""

from __future__ import annotations

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
