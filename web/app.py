"""The web process: the WhatsApp webhook and the health probes, as a Flask app factory.

Production: ``gunicorn 'web.app:create_app()'`` (see web/__init__.py for the flags we run with);
development: ``flask --app web.app run`` or ``python -m web``.

Each concern is a blueprint built by ``create_app`` from one shared ``WebContext`` (settings and the
Redis client), so a further endpoint (such as ``/metrics``) is one more blueprint in ``_blueprints``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Blueprint, Flask
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from config.settings import Settings, get_settings
from connectors.whatsapp_inbox import Inbox
from utils.logging import configure_logging, register_secret
from web.health import health_blueprint
from web.metrics import metrics_blueprint
from web.webhook import WebhookConfig, whatsapp_blueprint

#: Redis timeouts for the web process: a stalled Redis must fail a request (Meta then retries)
#: rather than hold a worker; seconds.
REDIS_CONNECT_TIMEOUT = 2.0
REDIS_SOCKET_TIMEOUT = 5.0
#: Retries of one Redis command after a connection error, with their backoff ceiling; enough to ride
#: out a reconnect, short enough that a Redis outage answers 503 within a second, not redis-py's
#: default of several seconds per request; seconds.
REDIS_RETRIES = 2
REDIS_RETRY_BACKOFF_CAP = 0.25


@dataclass(frozen=True)
class WebContext:
    """What every blueprint may use; kept at ``app.extensions["kmrl"]``."""

    settings: Settings
    redis: redis.Redis


def redis_for_web(settings: Settings) -> redis.Redis:
    """The state Redis (STATE_REDIS_URL) with the web process's short timeouts."""
    return redis.Redis.from_url(
        settings.state_redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=REDIS_RETRY_BACKOFF_CAP), REDIS_RETRIES))


def create_app(settings: Settings | None = None, redis_client: redis.Redis | None = None) -> Flask:
    """A configured app. ``settings`` default to the environment; ``redis_client`` to the state Redis.

    Never raises for missing WhatsApp settings: the probes (and any other blueprint) still serve,
    and the webhook logs once what is missing and answers accordingly.
    """
    settings = settings or get_settings()
    configure_logging(log_file=settings.log_file, level=settings.log_level, console_format=settings.log_format)
    client = redis_client if redis_client is not None else redis_for_web(settings)
    context = WebContext(settings=settings, redis=client)

    app = Flask("web")
    app.extensions["kmrl"] = context
    for blueprint in _blueprints(context):
        app.register_blueprint(blueprint)
    return app


def _blueprints(context: WebContext) -> list[Blueprint]:
    webhook = WebhookConfig.from_settings(context.settings)
    register_secret(webhook.app_secret, webhook.verify_token)
    inbox = Inbox.for_prefix(context.redis, context.settings.key_prefix)
    return [
        health_blueprint(context.redis),
        whatsapp_blueprint(webhook, inbox),
        metrics_blueprint(context.settings),
    ]
