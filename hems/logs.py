"""structlog setup: JSON lines when not on a TTY (journald), readable output on one.

Standard-library loggers (pymodbus, ocpp, aiomqtt, apscheduler) go through the same pipeline.
Each JSON line is prefixed with a syslog priority `<N>` under systemd so journald files it
at the right level (SyslogLevelPrefix= defaults to yes).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    under_journald = bool(os.environ.get("JOURNAL_STREAM")) and fmt == "json"
    if fmt == "json":
        renderer: list[Any] = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=False),
        ]

    class _Formatter(structlog.stdlib.ProcessorFormatter):
        def format(self, record: logging.LogRecord) -> str:
            line = super().format(record)
            if under_journald:
                return f"<{_PRIORITY.get(record.levelname.lower(), 6)}>{line}"
            return line

    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(foreign_pre_chain=shared, processors=renderer))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # These log every frame at INFO; keep them to warnings unless debugging.
    for noisy in ("ocpp", "pymodbus", "websockets", "apscheduler", "httpx", "aiomqtt"):
        logging.getLogger(noisy).setLevel("DEBUG" if level == "debug" else "WARNING")
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
