"""Loggers of the client library.

A library must stay quiet unless its user asks otherwise, so client events go through the
standard ``logging`` module under ``minibroker.client.*`` (as kafka-python's do): with no
logging configured only warnings and errors reach stderr. Events keep structlog's shape:
a snake_case name plus bound fields.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog


def get_logger(name: str) -> Any:
    return structlog.wrap_logger(
        logging.getLogger(f"minibroker.{name}"),
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
