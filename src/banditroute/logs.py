"""Structured logging set-up for the command-line tools (key=value lines on stderr)."""

from __future__ import annotations

import logging
import sys

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing, so loggers cached before a
    redirection (a test's capture, a daemon's reopened stream) never write to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_PROCESSORS: list[structlog.typing.Processor] = []
"""The one processor list every configuration uses, changed in place: a logger cached on its
first use holds this list, so a later configure_logging (each in-process CLI run, a test's
``capture_logs``) reaches it too instead of leaving it on the processors it was cached with."""


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Route structlog to stderr as timestamped key=value (or JSON) lines. The level of a
    logger already used stays the one it was first used under (one call per process when
    serving)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    _PROCESSORS[:] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
