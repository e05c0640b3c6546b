"""``/healthz`` (the process answers) and ``/readyz`` (it can also reach Redis, so it can queue).

A load balancer or orchestrator restarts on a failing ``/healthz`` and stops routing on a failing
``/readyz``; a Redis outage must not get healthy workers restarted, hence two probes.

Both are served on the internal listener only, and without a token: a liveness probe (Docker's
HEALTHCHECK, a load balancer) usually cannot send one, and they tell nothing beyond "alive" and
"Redis reachable". Their endpoint names are ``HEALTH_ENDPOINTS``, which the operator guard leaves open.
"""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from utils.logging import get_logger

log = get_logger(__name__)

#: The probes' Flask endpoint names (open on the internal listener, see web.operator).
HEALTH_ENDPOINTS = frozenset({"health.healthz", "health.readyz"})


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
