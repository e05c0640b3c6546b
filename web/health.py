"""``/healthz`` (the process answers) and ``/readyz`` (it can also reach Redis, so it can queue).

A load balancer or orchestrator restarts on a failing ``/healthz`` and stops routing on a failing
``/readyz``; a Redis outage must not get healthy workers restarted, hence two probes.
"""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from utils.logging import get_logger

log = get_logger(__name__)


def health_blueprint(client: redis.Redis) -> Blueprint:
    """The probe routes; ``client`` is the Redis the webhook queues into."""
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="alive")

    @bp.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            client.ping()
        except redis.RedisError as exc:
            log.warning("readiness_failed", dependency="redis", error=type(exc).__name__)
            return jsonify(status="unavailable", redis="unreachable"), 503
        return jsonify(status="ready", redis="ok"), 200

    return bp
