"""gunicorn's access log as JSON lines, like every other log of the service.

gunicorn writes its access log in Apache's combined format, one free-text line per request, which a
log pipeline that reads the service's JSON lines cannot parse, and which quotes the query string
whole (the webhook handshake's ``hub.verify_token`` included). ``JsonAccessLogger`` writes one JSON
object per request instead: ``event`` ``http_access``, the UTC ``timestamp``, ``method``, ``path``,
``query`` (values masked, names kept), ``status``, ``bytes``, ``seconds``, ``remote`` and
``user_agent``. It is on when an access log is asked for (WEB_ACCESS_LOG, or gunicorn's
``--access-logfile``); off by default, as gunicorn's is.
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC, datetime
from typing import Any

from gunicorn.glogging import Logger

from utils.logging import redact_url


class JsonAccessLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's logger with ``access`` writing one JSON line per request (module docstring)."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        query = environ.get("QUERY_STRING") or ""
        line = {
            "event": "http_access",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "level": "info",
            "logger": "gunicorn.access",
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": redact_url(f"http://h/?{query}").partition("?")[2] if query else "",
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "seconds": round(request_time.total_seconds(), 6),
            "remote": environ.get("REMOTE_ADDR", ""),
            "user_agent": environ.get("HTTP_USER_AGENT", ""),
        }
        try:
            self.access_log.info("%s", json.dumps(line, ensure_ascii=False))
        except Exception:  # noqa: BLE001 - gunicorn's own access() reports a failed line the same way
            self.error(traceback.format_exc())
