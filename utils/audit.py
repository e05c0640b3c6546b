"""The audit log: one append-only JSON line per document decision, never a secret.

Decisions: ingested, duplicate, skipped, dead_lettered, deleted, replayed, held (with the hold rule
and the kinds of personal data found, never their values), released, held_dropped. Each line carries the time,
source, scope, source_id, sha256, filename, department, the rule or reason, and the run id. The file
(``AUDIT_LOG``, default ./logs/audit.log) is rotated like the service log.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import threading
import time
from typing import Any

from utils.logging import LOG_BACKUPS, LOG_MAX_BYTES, mask_text

_loggers: dict[str, logging.Logger] = {}
_lock = threading.Lock()


def _logger_for(path: str) -> logging.Logger:
    path = os.path.abspath(path)
    with _lock:
        logger = _loggers.get(path)
        if logger is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            logger = logging.getLogger(f"kmrl.audit.{len(_loggers)}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                                           encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            _loggers[path] = logger
        return logger


class AuditLog:
    """Appends decisions to ``path``; an empty path disables the audit log."""

    def __init__(self, path: str) -> None:
        self.path = path

    def record(self, decision: str, **fields: Any) -> None:
        if not self.path:
            return
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "decision": decision}
        entry.update({k: v for k, v in fields.items() if v not in (None, "")})
        _logger_for(self.path).info(mask_text(json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str)))
