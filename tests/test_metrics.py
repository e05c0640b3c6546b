"""``GET /metrics``: Prometheus text built from the counters and gauges every worker keeps in Redis."""

from __future__ import annotations

import platform
import re
import time
from dataclasses import replace
from typing import Any

import redis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from base.metric_buffer import BUCKETS, HUB_UPLOAD, WEBHOOK_REQUEST, MetricBuffer
from base.state import DeadLetter, StateStore
from tests.conftest import make_settings
from tests.helpers import FakeFile, ListConnector, fake_files
from utils.errors import ThrottledError, TransientError
from web.app import create_internal_app
from web.metric_flush import WebMetrics, flush_all
from web.metrics import CONTENT_TYPE, build_version, metrics_blueprint, parse_field, render_metrics


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
    inbox = (("scope", "inbox"), ("scope_name", "inbox"), ("source", "fake"))
    last = samples(families["kmrl_last_success_timestamp_seconds"])[inbox]
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
    drive = (("scope", "b!drive"), ("scope_name", "b!drive"), ("source", "sharepoint"))  # no name known: the id
    assert samples(families["kmrl_lag_seconds"])[drive] == 125
    assert samples(families["kmrl_last_run_seconds"])[drive] == 4.5
    assert samples(families["kmrl_dead_letters"]) == {(("source", "email"),): 2, (("source", "sharepoint"),): 0}
    assert 25 < samples(families["kmrl_throttled_seconds"])[(("service", "graph"),)] <= 31
    assert samples(families["kmrl_lock_skips"])[(("source", "maximo"),)] == 1


def test_label_values_are_escaped_and_commas_inside_values_survive(state):
    scope = 'Shared Documents, 2024 "final"\\drafts'
    state.set_gauge("kmrl_last_success_timestamp_seconds", {"source": "sharepoint", "scope": scope}, 1.0)
    assert parse_field(f"kmrl_x|scope={scope},source=sharepoint") == ("kmrl_x", (("scope", scope),
                                                                              ("source", "sharepoint")))
    family = parsed(render_metrics(state))["kmrl_last_success_timestamp_seconds"]
    assert samples(family) == {(("scope", scope), ("scope_name", scope), ("source", "sharepoint")): 1.0}


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


# -- histograms, classified documents, scope failures, schedule, build ----------------------------------------

def test_histograms_are_rendered_cumulative_with_le_sum_and_count(state):
    buffer = MetricBuffer()
    for seconds in (0.004, 0.005, 0.3, 7.0, 500.0):  # 0.005 is a bound: le is inclusive
        buffer.observe(HUB_UPLOAD, {"source": "email"}, seconds)
    state.add_increments(buffer.drain())
    family = parsed(render_metrics(state))["kmrl_hub_upload_seconds"]
    assert family.type == "histogram"
    got = {(s.name, s.labels.get("le", "")): s.value for s in family.samples}
    assert got[("kmrl_hub_upload_seconds_bucket", "0.005")] == 2
    assert got[("kmrl_hub_upload_seconds_bucket", "0.25")] == 2
    assert got[("kmrl_hub_upload_seconds_bucket", "0.5")] == 3
    assert got[("kmrl_hub_upload_seconds_bucket", "10.0")] == 4
    assert got[("kmrl_hub_upload_seconds_bucket", "120.0")] == 4
    assert got[("kmrl_hub_upload_seconds_bucket", "+Inf")] == 5
    assert got[("kmrl_hub_upload_seconds_count", "")] == 5
    assert abs(got[("kmrl_hub_upload_seconds_sum", "")] - 507.309) < 1e-9
    buckets = [s.value for s in family.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and len(buckets) == len(BUCKETS[HUB_UPLOAD]) + 1


def test_buffers_of_several_processes_add_up_and_a_drained_buffer_is_empty(state):
    one, two = MetricBuffer(), MetricBuffer()
    one.observe(WEBHOOK_REQUEST, {"webhook": "whatsapp"}, 0.002)
    two.observe(WEBHOOK_REQUEST, {"webhook": "whatsapp"}, 0.02)
    two.count("kmrl_webhook_rejected_total", {"webhook": "whatsapp", "reason": "signature_mismatch"})
    state.add_increments(one.drain())
    state.add_increments(two.drain())
    assert not one.drain() and not two.drain()
    families = parsed(render_metrics(state))
    got = {(s.name, s.labels.get("le", "")): s.value for s in families["kmrl_webhook_request_seconds"].samples}
    assert got[("kmrl_webhook_request_seconds_bucket", "0.0025")] == 1
    assert got[("kmrl_webhook_request_seconds_count", "")] == 2
    rejected = samples(families["kmrl_webhook_rejected"])
    assert rejected == {(("reason", "signature_mismatch"), ("webhook", "whatsapp")): 1}


def test_a_sync_counts_new_documents_by_language_and_department_and_times_runs_and_uploads(settings, state):
    files = [FakeFile("circular", "മെട്രോ സർവീസ് സമയം മാറ്റം സംബന്ധിച്ച സർക്കുലർ".encode() * 8,
                      text="മെട്രോ സർവീസ് സമയം മാറ്റം സംബന്ധിച്ച സർക്കുലർ " * 8),
             *fake_files(2)]
    connector = ListConnector({"inbox": files}, settings=settings, state=state)
    connector.sync_documents({})
    connector.sync_documents({})  # nothing new: a second run, no upload, no document
    families = parsed(render_metrics(state))
    classified = samples(families["kmrl_documents_classified"])
    assert sum(classified.values()) == 3
    assert {dict(labels)["language"] for labels in classified} >= {"ml"}
    assert all(dict(labels)["source"] == "fake" and dict(labels)["department"] for labels in classified)
    counts = {s.name: s.value for s in families["kmrl_run_duration_seconds"].samples if not s.labels.get("le")}
    assert counts["kmrl_run_duration_seconds_count"] == 2
    uploads = {s.name: s.value for s in families["kmrl_hub_upload_seconds"].samples if not s.labels.get("le")}
    assert uploads["kmrl_hub_upload_seconds_count"] == 3


class _FailingConnector(ListConnector):
    """Each run fails with the next error of ``errors`` (None: the run reads its files)."""

    def __init__(self, errors: list[Exception | None], **kwargs: Any) -> None:
        super().__init__({"inbox": fake_files(1)}, **kwargs)
        self.errors = errors

    def list_changes(self, scope: str, cursor: Any) -> Any:
        error = self.errors.pop(0)
        if error is not None:
            raise error
        return super().list_changes(scope, cursor)


def test_failed_runs_in_a_row_count_failures_keep_through_throttling_and_reset_on_success(settings, state):
    connector = _FailingConnector([TransientError("source down"), TransientError("source down"),
                                   ThrottledError("graph", time.time() + 600), TransientError("source down"), None],
                                  settings=settings, state=state)
    seen = []
    for _ in range(5):
        connector.sync_documents({})
        family = parsed(render_metrics(state))["kmrl_scope_failures_in_a_row"]
        seen.append(samples(family)[(("scope", "inbox"), ("scope_name", "inbox"), ("source", "fake"))])
    assert seen == [1, 2, 2, 3, 0]
    states = samples(parsed(render_metrics(state))["kmrl_scope_state"])
    assert states == {(("scope", "inbox"), ("scope_name", "inbox"), ("source", "fake"), ("state", "ok")): 1}


def test_sync_intervals_come_from_the_settings_and_a_bad_one_is_left_out(settings, state):
    environ = {**settings.environ, "MAXIMO_SYNC_MINUTES": "abc", "EMAIL_SYNC_MINUTES": "0",
               "SHAREPOINT_SYNC_MINUTES": "15"}
    text = render_metrics(state, settings=replace(settings, environ=environ))
    intervals = samples(parsed(text)["kmrl_sync_interval_seconds"])
    assert intervals[(("source", "sharepoint"),)] == 900
    assert (("source", "maximo"),) not in intervals and (("source", "email"),) not in intervals


def test_build_info_names_the_version_and_python(state):
    ((labels, value),) = samples(parsed(render_metrics(state))["kmrl_build_info"]).items()
    assert value == 1 and dict(labels) == {"version": build_version(), "python": platform.python_version()}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", build_version())


# -- the webhook's metrics: recorded in process, written in the background ------------------------------------

def _webhook_client(redis_client: redis.Redis, metrics: WebMetrics) -> Any:
    from flask import Flask

    from connectors.whatsapp_inbox import Inbox
    from web.webhook import WebhookConfig, whatsapp_blueprint

    app = Flask("webhook-metrics")
    app.register_blueprint(whatsapp_blueprint(WebhookConfig(app_secret="metrics-app-secret"),
                                              Inbox.for_prefix(redis_client), metrics=metrics))
    return app.test_client()


def test_webhook_requests_cost_no_redis_call_for_their_metrics_until_the_flush(state, redis_client):
    metrics = WebMetrics(state, interval=3600)
    client = _webhook_client(redis_client, metrics)
    assert client.post("/webhooks/whatsapp", data=b"{}").status_code == 403  # no signature
    forged = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert client.post("/webhooks/whatsapp", data=b"{}", headers=forged).status_code == 403
    assert not redis_client.exists(state.keys.histograms())
    flush_all()
    families = parsed(render_metrics(state))
    assert samples(families["kmrl_webhook_rejected"]) == {
        (("reason", "signature_missing"), ("webhook", "whatsapp")): 1,
        (("reason", "signature_mismatch"), ("webhook", "whatsapp")): 1}
    count = [s.value for s in families["kmrl_webhook_request_seconds"].samples
             if s.name == "kmrl_webhook_request_seconds_count"]
    assert count == [2]


def test_the_signature_counters_exist_before_the_first_refusal(state, redis_client):
    metrics = WebMetrics(state, interval=3600)
    _webhook_client(redis_client, metrics)
    metrics.flush()
    assert set(samples(parsed(render_metrics(state))["kmrl_webhook_rejected"]).values()) == {0}


def test_the_background_writer_writes_without_a_scrape(state, redis_client):
    metrics = WebMetrics(state, interval=0.05)
    metrics.observe(WEBHOOK_REQUEST, {"webhook": "whatsapp"}, 0.003)
    deadline = time.monotonic() + 5
    while not redis_client.hlen(state.keys.histograms()):
        assert time.monotonic() < deadline, "the buffered observation was never written"
        time.sleep(0.02)


def test_metrics_not_written_when_redis_is_down_are_dropped_with_a_log_line():
    dead = StateStore(redis.Redis.from_url("redis://127.0.0.1:1/15", socket_connect_timeout=0.2))
    metrics = WebMetrics(dead, interval=3600)
    metrics.count("kmrl_webhook_rejected_total", {"webhook": "whatsapp", "reason": "malformed"})
    metrics.flush()  # does not raise
    assert not metrics.buffer.drain()
