"""``GET /metrics``: Prometheus text built from the counters and gauges every worker keeps in Redis."""

from __future__ import annotations

import time
from dataclasses import replace

import redis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from base.state import DeadLetter, StateStore
from tests.conftest import make_settings
from tests.helpers import FakeFile, ListConnector, fake_files
from web.app import create_internal_app
from web.metrics import CONTENT_TYPE, metrics_blueprint, parse_field, render_metrics


def parsed(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Metric) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def test_a_sync_shows_up_as_documents_bytes_runs_and_last_success(settings, state):
    files = fake_files(3)
    files.append(FakeFile("tool", b"MZ", filename="tool.exe"))
    connector = ListConnector({"inbox": files}, settings=settings, state=state)
    connector.sync_documents({})
    families = parsed(render_metrics(state))
    documents = samples(families["kmrl_documents"])
    assert documents[(("outcome", "new"), ("source", "fake"))] == 3
    assert documents[(("outcome", "skipped"), ("source", "fake"))] == 1  # the default rules skip executables
    assert families["kmrl_documents"].type == "counter"
    assert samples(families["kmrl_bytes"])[(("source", "fake"),)] == sum(len(f.content) for f in files[:3])
    assert samples(families["kmrl_runs"])[(("source", "fake"), ("state", "ok"))] == 1
    assert families["kmrl_run_seconds"].type == "counter"
    last = samples(families["kmrl_last_success_timestamp_seconds"])[(("scope", "inbox"), ("source", "fake"))]
    assert abs(last - time.time()) < 60
    assert families["kmrl_lag_seconds"].type == "gauge"


def test_lag_dead_letters_throttling_and_lock_skips_are_exposed(state):
    now = 1_750_000_000.0
    state.update_status("sharepoint", "b!drive", {"state": "ok", "last_success": now - 125, "last_run_seconds": 4.5})
    state.add_dead_letter(DeadLetter("email", "finance/INBOX", "uid-7", "corrupt"))
    state.add_dead_letter(DeadLetter("email", "finance/INBOX", "uid-8", "corrupt"))
    state.throttle_gate("graph", "kmrl").block_until(time.time() + 30)
    state.incr_metric("kmrl_lock_skips_total", {"source": "maximo"})
    families = parsed(render_metrics(state, now=now))
    assert samples(families["kmrl_lag_seconds"])[(("scope", "b!drive"), ("source", "sharepoint"))] == 125
    assert samples(families["kmrl_last_run_seconds"])[(("scope", "b!drive"), ("source", "sharepoint"))] == 4.5
    assert samples(families["kmrl_dead_letters"]) == {(("source", "email"),): 2, (("source", "sharepoint"),): 0}
    assert 25 < samples(families["kmrl_throttled_seconds"])[(("service", "graph"),)] <= 31
    assert samples(families["kmrl_lock_skips"])[(("source", "maximo"),)] == 1


def test_label_values_are_escaped_and_commas_inside_values_survive(state):
    scope = 'Shared Documents, 2024 "final"\\drafts'
    state.set_gauge("kmrl_last_success_timestamp_seconds", {"source": "sharepoint", "scope": scope}, 1.0)
    assert parse_field(f"kmrl_x|scope={scope},source=sharepoint") == ("kmrl_x", (("scope", scope),
                                                                              ("source", "sharepoint")))
    family = parsed(render_metrics(state))["kmrl_last_success_timestamp_seconds"]
    assert samples(family) == {(("scope", scope), ("source", "sharepoint")): 1.0}


def test_each_family_has_one_help_and_one_type_line(state):
    state.incr_metric("kmrl_documents_total", {"source": "email", "outcome": "new"})
    state.incr_metric("kmrl_documents_total", {"source": "maximo", "outcome": "new"})
    state.set_gauge("kmrl_source_healthy", {"source": "email"}, 1)
    text = render_metrics(state)
    assert text.count("# TYPE kmrl_documents_total counter") == 1
    assert text.count("# HELP kmrl_documents_total ") == 1
    assert "# TYPE kmrl_source_healthy gauge" in text
    lines = text.splitlines()
    start = lines.index("# TYPE kmrl_documents_total counter")
    assert all(line.startswith("kmrl_documents_total{") for line in lines[start + 1:start + 3])


def test_web_app_serves_metrics_to_the_operator(settings, state, redis_client):
    state.incr_metric("kmrl_documents_total", {"source": "whatsapp", "outcome": "new"}, 2)
    token = "metrics-operator-token-5c1e9b7a"
    client = create_internal_app(replace(settings, environ={"OPERATOR_TOKEN": token}),
                                 redis_client=redis_client).test_client()
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.headers["Content-Type"] == CONTENT_TYPE
    families = parsed(response.get_data(as_text=True))
    assert samples(families["kmrl_documents"])[(("outcome", "new"), ("source", "whatsapp"))] == 2


def test_metrics_answer_503_when_redis_is_down(tmp_path):
    from flask import Flask

    settings = make_settings(tmp_path, "redis://127.0.0.1:1/15")
    dead = StateStore(redis.Redis.from_url("redis://127.0.0.1:1/15", decode_responses=True,
                                           socket_connect_timeout=0.5))
    app = Flask("t")
    app.register_blueprint(metrics_blueprint(settings, dead))
    response = app.test_client().get("/metrics")
    assert response.status_code == 503
