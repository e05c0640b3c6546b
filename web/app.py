"""The web process: the WhatsApp webhook, the probes and the operator routes, as Flask app factories.

Two apps, one per listener (web/listeners.py has the access model): ``create_public_app`` carries only
the webhook (what Meta must reach); ``create_internal_app`` carries the probes and, behind
OPERATOR_TOKEN, ``/metrics`` and the operator login (web/operator.py). ``create_app`` joins them in
one WSGI app that routes each request by the listener it came in on, which is what gunicorn serves:
``gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'`` (the config file binds both
listeners). Development: ``python -m web``.

Each concern is a blueprint built from the process's one ``Service`` (settings, the state Redis client with
the web's short timeouts, the inbox stream): a
further public endpoint (Graph's notification handshake) joins ``_public_blueprints``, a further
operator page joins ``_internal_blueprints`` and is guarded without saying so.
"""

from __future__ import annotations

import redis
from flask import Blueprint, Flask
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from config.redis_tls import redis_tls_kwargs
from config.settings import Settings, get_settings
from connectors.service import Service
from utils.logging import configure_logging, register_secret
from web.graph_notifications import CeleryDispatch, GraphWebhookConfig, graph_blueprint
from web.health import HEALTH_ENDPOINTS, health_blueprint
from web.listeners import ListenerDispatch, Listeners
from web.metric_flush import WebMetrics
from web.metrics import metrics_blueprint
from web.operator import OperatorAccess, install_operator_access
from web.status_page import PAGE_ENDPOINTS, status_blueprint
from web.sync_requests import RunSender, sync_request_blueprint, whatsapp_inbox_request
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


def redis_for_web(settings: Settings) -> redis.Redis:
    """The state Redis (STATE_REDIS_URL) with the web process's short timeouts."""
    return redis.Redis.from_url(
        settings.state_redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=REDIS_RETRY_BACKOFF_CAP), REDIS_RETRIES),
        **redis_tls_kwargs(settings.state_redis_url, settings.redis_ca_file))


def _service(settings: Settings | None, redis_client: redis.Redis | None) -> Service:
    settings = settings or get_settings()
    configure_logging(log_file=settings.log_file, level=settings.log_level, console_format=settings.log_format)
    client = redis_client if redis_client is not None else redis_for_web(settings)
    return Service(settings, redis_client=client)


def _flask(name: str, service: Service, blueprints: list[Blueprint]) -> Flask:
    app = Flask(name)
    app.extensions["kmrl"] = service
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app


def create_public_app(settings: Settings | None = None, redis_client: redis.Redis | None = None) -> Flask:
    """The public listener's app: the WhatsApp webhook and Graph's change notifications, nothing else
    (every other path is 404).

    ``settings`` default to the environment; ``redis_client`` to the state Redis. Never raises for
    missing WhatsApp settings: the webhook logs once what is missing and answers accordingly.
    """
    service = _service(settings, redis_client)
    return _flask("web.public", service, _public_blueprints(service))


def create_internal_app(settings: Settings | None = None, redis_client: redis.Redis | None = None) -> Flask:
    """The internal listener's app: ``/healthz`` and ``/readyz`` (open), and the operator routes
    (``/metrics``, ``/login``, ``/logout``, the status page ``/`` with its dead-letter retry) behind
    OPERATOR_TOKEN, 404 without one."""
    service = _service(settings, redis_client)
    app = _flask("web.internal", service, _internal_blueprints(service))
    install_operator_access(app, OperatorAccess.from_settings(service.settings), open_endpoints=HEALTH_ENDPOINTS,
                            page_endpoints=PAGE_ENDPOINTS)
    return app


def create_app(settings: Settings | None = None, redis_client: redis.Redis | None = None) -> ListenerDispatch:
    """Both apps in one WSGI app: a request that came in on WEB_INTERNAL_PORT goes to the internal
    app, any other to the public one (``.public`` and ``.internal`` are the two Flask apps).

    Raises ConfigError for unusable listener, webhook or operator settings.
    """
    service = _service(settings, redis_client)
    listeners = Listeners.from_settings(service.settings)
    return ListenerDispatch(create_public_app(service.settings, service.redis),
                            create_internal_app(service.settings, service.redis),
                            internal_port=listeners.internal_port)


def _public_blueprints(service: Service) -> list[Blueprint]:
    webhook = WebhookConfig.from_settings(service.settings)
    register_secret(webhook.app_secret, webhook.verify_token)
    sender = RunSender(service.settings)
    graph = GraphWebhookConfig.from_settings(service.settings)
    register_secret(graph.client_state_secret)
    return [whatsapp_blueprint(webhook, service.inbox, metrics=WebMetrics(service.state),
                               on_queued=whatsapp_inbox_request(service, sender).poke),
            graph_blueprint(graph, service.state, CeleryDispatch(sender))]


def _internal_blueprints(service: Service) -> list[Blueprint]:
    return [health_blueprint(service.redis), metrics_blueprint(service.settings),
            sync_request_blueprint(service, RunSender(service.settings)),
            status_blueprint(service.settings, sources=service.sources)]
