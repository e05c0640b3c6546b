"""deploy/: the Prometheus alert rules (checked and unit-tested with promtool), the Grafana dashboard,
and, after a real sync round through the simulators, every metric they read in a live ``/metrics``."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from base.state import StateStore
from connectors.registry import build_connectors
from sandbox.samples import kmrl_samples
from sandbox.servers import ServerThread
from sandbox.stack import RedisLayout, Stack
from sandbox.whatsapp import meta_body
from tests.conftest import flushed_db_url, skip_or_fail
from tests.readme_commands import readme_command
from web.app import create_internal_app

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kmrl-connectors.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"

#: Metrics the dashboard or the rules read that a sync round does not publish, and why.
PUBLISHED_ELSEWHERE = {
    "kmrl_watcher_connected": "published by the push watchers (IMAP IDLE, Graph change notifications) while "
                              "they run; a scheduled sync round runs none",
}
#: Series Prometheus makes itself (not in any /metrics).
PROMETHEUS_OWN = {"up"}
#: What Grafana substitutes for its variables, so that a query can be checked as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m", "$source": ".*"}
#: The panels the dashboard must have (README "Monitoring" describes each).
PANELS = {"Scope states", "Failed runs in a row, per scope", "Runs by final state", "Lag per scope, in sync intervals",
          "Documents per source, by outcome", "Dead letters waiting", "New documents by language",
          "New documents by department", "New documents by source, language and department", "Run duration p95",
          "Hub upload latency p95", "Webhook latency p99", "Webhook signature failures", "Watchers connected", "Build"}
SEED = 8080
OPERATOR_TOKEN = "monitoring-test-operator-token-7d21c9"
_METRIC_NAME = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
_NOT_NAMES = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)'
                        r'\s*\([^)]*\)')
_PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "delta", "histogram_quantile", "by", "on",
                 "without", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
                 "label_values", "topk", "bottomk", "abs", "irate", "deriv", "time", "vector", "clamp_min"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        skip_or_fail("promtool is not installed (apt-get install -y --no-install-recommends prometheus)")
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """promtool with ``args``, run from the checkout's root (where README's commands run)."""
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False,
                          cwd=ROOT)


def readme_promtool(prefix: str) -> subprocess.CompletedProcess[str]:
    """The README's promtool command that starts with ``prefix``, as written."""
    program, *args = shlex.split(readme_command(prefix))
    assert program == "promtool"
    return run_promtool(*args)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers outside strings, label matchers,
    ranges and grouping clauses, less functions and keywords."""
    bare = _NOT_NAMES.sub(" ", expr)
    names = set()
    for match in _METRIC_NAME.finditer(bare):
        word = match.group(0)
        if word in _PROMQL_WORDS or bare[match.end():].lstrip().startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL query of the dashboard: its panels' targets and its variables' queries (of
    ``label_values(selector, label)``, the selector)."""
    queries = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            text = query["query"] if isinstance(query, dict) else query
            label_values = re.fullmatch(r"label_values\((.+),\s*\w+\)", text)
            queries.append(label_values.group(1) if label_values else text)
    return queries


def grafana_substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def rule_exprs() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


# -- the alert rules ---------------------------------------------------------------------------------------

def test_metric_names_are_read_from_promql_without_functions_labels_or_ranges():
    expr = ('histogram_quantile(0.95, sum by (le, source) (rate(kmrl_run_duration_seconds_bucket{source=~"a|b"}[30m])))'
            ' / on(source) group_left max by (source) (kmrl_sync_interval_seconds) > 2 and up{job="x"} == 0')
    assert metric_names(expr) == {"kmrl_run_duration_seconds_bucket", "kmrl_sync_interval_seconds", "up"}


def test_the_alert_rules_pass_promtool_check():
    result = readme_promtool("promtool check rules")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_the_alert_rules_cover_what_operators_are_alerted_to():
    exprs = rule_exprs()
    assert set(exprs) == {"KmrlScopeFailing", "KmrlScopeLagging", "KmrlDeadLettersGrowing",
                          "KmrlWebhookSignatureFailures", "KmrlWatcherDisconnected", "KmrlMetricsDown"}
    assert "(kmrl_scope_failures_in_a_row) >= 3" in exprs["KmrlScopeFailing"]
    assert "2 * max by (source) (kmrl_sync_interval_seconds)" in exprs["KmrlScopeLagging"]


def test_the_alert_rules_pass_their_unit_tests():
    result = readme_promtool("promtool test rules")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_weakened_rule(tmp_path: Path):
    """Each alert's unit test fails once its threshold is moved: the tests are not vacuous."""
    for name in (RULES.name, RULES_TEST.name):
        shutil.copy(RULES.parent / name, tmp_path / name)
    weakened = RULES.read_text(encoding="utf-8")
    for old, new in (("(kmrl_scope_failures_in_a_row) >= 3", "(kmrl_scope_failures_in_a_row) >= 4"),
                     ("2 * max by (source) (kmrl_sync", "3 * max by (source) (kmrl_sync"),
                     ("(delta(kmrl_dead_letters[1h])) > 0", "(delta(kmrl_dead_letters[1h])) > 2"),
                     ("\n          > 5", "\n          > 50"),
                     ("(kmrl_watcher_connected) == 0", "(kmrl_watcher_connected) < 0"),
                     ('up{job="kmrl-connectors"} == 0', 'up{job="kmrl-connectors"} < 0')):
        assert old in weakened, old
        weakened = weakened.replace(old, new)
    (tmp_path / RULES.name).write_text(weakened, encoding="utf-8")
    result = run_promtool("test", "rules", tmp_path / RULES_TEST.name)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+), time:", result.stdout + result.stderr))
    assert failed == set(rule_exprs()), result.stdout + result.stderr


def test_promtool_check_refuses_a_rule_that_is_not_promql(tmp_path: Path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text(encoding="utf-8").replace("(kmrl_scope_failures_in_a_row) >= 3",
                                                                "(kmrl_scope_failures_in_a_row) >= "), encoding="utf-8")
    result = run_promtool("check", "rules", broken)
    assert result.returncode != 0 and "KmrlScopeFailing" not in result.stdout.split("FAILED")[0]


def test_the_prometheus_config_is_valid_and_sends_the_operator_token(tmp_path: Path):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["authorization"]["type"] == "Bearer" and job["static_configs"] == [{"targets": ["web:8001"]}]
    # The token file exists only inside the container: check a copy that points at one here.
    token = tmp_path / "operator_token"
    token.write_text("x" * 32, encoding="utf-8")
    job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(RULES, tmp_path / RULES.name)
    result = run_promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# -- the dashboard -----------------------------------------------------------------------------------------

def test_the_dashboard_has_every_panel_and_each_reads_the_chosen_prometheus():
    board = dashboard()
    titled = {panel["title"]: panel for panel in panels(board) if panel["type"] != "row"}
    assert set(titled) >= PANELS, PANELS - set(titled)
    for title, panel in titled.items():
        assert panel["targets"], title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert all(target["datasource"] == panel["datasource"] for target in panel["targets"]), title
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))


def test_every_dashboard_query_is_promql_that_promtool_accepts(tmp_path: Path):
    """The queries, Grafana's variables substituted, as recording rules: promtool parses each."""
    queries = dashboard_queries(dashboard())
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": grafana_substituted(expr)}
        for n, expr in enumerate(queries)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run_promtool("check", "rules", tmp_path / "dashboard.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [q for q in queries if "$" in grafana_substituted(q)]  # no variable left unknown


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "kmrl.yml").read_text(encoding="utf-8"))["providers"]
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(
        encoding="utf-8"))["datasources"]
    mounts = dict(volume.split(":")[:2] for volume in compose["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert compose["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        provider["options"]["path"] + "/" + DASHBOARD.name)
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


# -- the live scrape after a sync round ----------------------------------------------------------------------

def scraped(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of an exposition (``_bucket``, ``_sum``, ``_count`` as they are)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def by(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in samples:
        totals[labels[label]] = totals.get(labels[label], 0.0) + value
    return totals


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[tuple[Stack, StateStore]]:
    """Every simulated source seeded and synced once, in process, through the real simulators (the
    WhatsApp messages through the web app's webhook, as Meta sends them)."""
    layout = RedisLayout(*(flushed_db_url(db) for db in (5, 6, 7, 8)))
    with Stack(root=tmp_path / "stack", redis=layout) as stack:
        stack.seed(kmrl_samples(SEED, 1))
        settings = stack.settings()
        state = StateStore.from_url(stack.redis.state_url, prefix=stack.key_prefix)
        for source in stack.active_sources:
            for connector in build_connectors(source, settings, state=state):
                result = connector.sync_documents()
                assert all(scope.state == "ok" for scope in result.scopes), (source, result)
        yield stack, state


def test_every_metric_the_dashboard_and_the_alerts_read_is_in_a_live_scrape_after_a_sync_round(synced):
    stack, state = synced
    # A forged notification: refused for its signature, and counted.
    forged = requests.post(stack.running.webhook_url, data=meta_body({"object": "whatsapp_business_account"}),
                           headers={"X-Hub-Signature-256": "sha256=" + "0" * 64,
                                    "Content-Type": "application/json"}, timeout=10)
    assert forged.status_code == 403
    settings = stack.settings()
    internal = create_internal_app(replace(settings, environ={**settings.environ, "OPERATOR_TOKEN": OPERATOR_TOKEN}))
    with ServerThread(internal) as server:
        def scrape() -> str:
            response = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                                    timeout=10)
            assert response.status_code == 200, response.text
            return response.text

        samples = scraped(scrape())
        queried = {name for expr in [*dashboard_queries(dashboard()), *rule_exprs().values()]
                   for name in metric_names(expr)}
        missing = queried - set(samples) - PROMETHEUS_OWN
        assert missing == set(PUBLISHED_ELSEWHERE), missing
        assert set(PUBLISHED_ELSEWHERE) <= queried  # the list names only what is read

        # The figures agree with each other and with the round.
        documents = [(labels, value) for labels, value in samples["kmrl_documents_total"]
                     if labels["outcome"] == "new"]
        assert by(samples["kmrl_documents_classified_total"], "source") == by(documents, "source")
        assert by(samples["kmrl_hub_upload_seconds_count"], "source") == by(documents, "source")
        assert by(samples["kmrl_run_duration_seconds_count"], "source") == by(samples["kmrl_runs_total"], "source")
        assert set(by(samples["kmrl_documents_classified_total"], "language")) <= {"ml", "en", "mixed", "unknown"}
        for name in ("kmrl_run_duration_seconds", "kmrl_hub_upload_seconds", "kmrl_webhook_request_seconds"):
            counts = [value for labels, value in samples[f"{name}_bucket"] if labels["le"] == "+Inf"]
            assert counts == [value for _, value in samples[f"{name}_count"]], name
        webhook = samples["kmrl_webhook_request_seconds_count"]
        assert [labels for labels, _ in webhook] == [{"webhook": "whatsapp"}] and webhook[0][1] >= 2
        rejected = {labels["reason"]: value for labels, value in samples["kmrl_webhook_rejected_total"]}
        assert rejected == {"signature_mismatch": 1.0, "signature_missing": 0.0}
        assert {labels["state"] for labels, _ in samples["kmrl_scope_state"]} == {"ok"}
        assert {value for _, value in samples["kmrl_scope_failures_in_a_row"]} == {0.0}
        assert by(samples["kmrl_sync_interval_seconds"], "source") == {s: 60.0 for s in stack.active_sources}
        ((build, _),) = samples["kmrl_build_info"]
        with open(ROOT / "pyproject.toml", "rb") as handle:
            assert build["version"] == tomllib.load(handle)["project"]["version"]

        # The watchers' gauge, published as the watcher change will (StateStore.set_gauge), is
        # served under the name and label the panel and the alert read.
        state.set_gauge("kmrl_watcher_connected", {"watcher": "email:INBOX"}, 0)
        assert scraped(scrape())["kmrl_watcher_connected"] == [({"watcher": "email:INBOX"}, 0.0)]
