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

from utils.logging import mask_text, shared_file_handler

_loggers: dict[str, logging.Logger] = {}
_lock = threading.Lock()


def _logger_for(path: str) -> logging.Logger:
    path = os.path.abspath(path)
    with _lock:
        logger = _loggers.get(path)
        if logger is None:
            logger = logging.getLogger(f"kmrl.audit.{len(_loggers)}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            handler = shared_file_handler(path)  # every worker process appends to it; logrotate rotates it
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            _loggers[path] = logger
        return logger


#: Lines a batch keeps in memory before it writes them anyway.
BATCH_MAX_LINES = 512


class AuditLog:
    """Appends decisions to ``path``; an empty path disables the audit log.

    Between ``begin_batch()`` and ``end_batch()`` a thread's lines wait in memory and are written
    together by ``flush()`` (the pipeline flushes before it records a batch in Redis, so no
    recorded document lacks its line), or once ``BATCH_MAX_LINES`` wait. Other threads and other
    callers write at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def record(self, decision: str, **fields: Any) -> None:
        if not self.path:
            return
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "decision": decision}
        entry.update({k: v for k, v in fields.items() if v not in (None, "")})
        line = mask_text(json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str))
        waiting: list[str] | None = getattr(self._local, "lines", None)
        if waiting is None:
            _logger_for(self.path).info(line)
            return
        waiting.append(line)
        if len(waiting) >= BATCH_MAX_LINES:
            self.flush()

    def begin_batch(self) -> None:
        """From now on this thread's lines wait for ``flush()`` (a batch already open goes on)."""
        if getattr(self._local, "lines", None) is None:
            self._local.lines = []

    def flush(self) -> None:
        """Writes this thread's waiting lines, in one write of the file."""
        waiting: list[str] | None = getattr(self._local, "lines", None)
        if not waiting or not self.path:
            return
        lines = list(waiting)
        waiting.clear()
        _logger_for(self.path).info("\n".join(lines))

    def end_batch(self) -> None:
        """Writes the waiting lines and goes back to writing each line at once."""
        try:
            self.flush()
        finally:
            self._local.lines = None
