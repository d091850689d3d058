"""Structured server logs through the standard ``logging`` module.

Modules log with ``logger.info("session opened", extra=fields(session=..., node=...))``.
The structured fields travel on the record; ``HumanFormatter`` appends them as ``key=value``
and ``JsonLinesFormatter`` writes one JSON object per line.  Tokens and operation data are
never logged, only ids and counts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Final, TextIO

__all__ = [
    "HumanFormatter",
    "JsonLinesFormatter",
    "configure_logging",
    "fields",
    "get_logger",
]

#: The attribute that carries structured fields on a ``LogRecord``.
FIELDS_ATTR: Final = "kora_fields"
ROOT_LOGGER: Final = "kora.server"


def get_logger(name: str) -> logging.Logger:
    """A child of the ``kora.server`` logger (``name`` is usually the module's)."""
    suffix = name.removeprefix(ROOT_LOGGER).lstrip(".")
    return logging.getLogger(f"{ROOT_LOGGER}.{suffix}" if suffix else ROOT_LOGGER)


def fields(**values: object) -> dict[str, object]:
    """``extra=`` for a log call: the structured fields of the line."""
    return {FIELDS_ATTR: values}


def _record_fields(record: logging.LogRecord) -> Mapping[str, object]:
    value = getattr(record, FIELDS_ATTR, None)
    return value if isinstance(value, Mapping) else {}


class HumanFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.000Z INFO  kora.server.session: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<5} {record.name}: "
            f"{record.getMessage()}"
        )
        extra = " ".join(f"{k}={v}" for k, v in _record_fields(record).items())
        if extra:
            line = f"{line} {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    *, json_lines: bool = False, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send ``kora`` logs to ``stream`` (stderr by default) in the chosen format.

    Meant for the command line; a library user configures ``logging`` themselves.  Calling
    it again replaces the handler it installed before.

    Args:
        json_lines: JSON lines instead of the human format.
        level: The level of the ``kora`` logger.
        stream: Where to write.

    Returns:
        The installed handler.
    """
    logger = logging.getLogger("kora")
    for handler in list(logger.handlers):
        if getattr(handler, "_kora_installed", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if json_lines else HumanFormatter())
    handler._kora_installed = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
