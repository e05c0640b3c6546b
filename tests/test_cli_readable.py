"""What the command line shows a person: readable scope names (SharePoint libraries as "site /
library", the drive id kept for machines), errors with their root cause first and no library chatter,
a status header that agrees with its scopes, a refused ``--scope``, ``--version`` and examples, a dry
run whose count matches its rows, and ``status | head`` without a traceback. Real Redis, the Graph,
Maximo and Hub simulators over sockets, and the CLI in this process (the ``run`` fixture of
tests/test_cli.py) or as the installed command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.health import HealthReport, SourceHealth, scope_health, store_report
from base.state import StateStore
from sandbox.maximo import DEFAULT_API_KEYS, MaximoSimulator
from sandbox.servers import ServerThread, free_port
from tests.simulator_mains import simulator
from tests.test_cli import run as _cli_run  # noqa: F401 - registers the fixture `run`
from web.metrics import render_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(_cli_run):  # noqa: F811 - the fixture of tests/test_cli.py, under the name its tests use
    return _cli_run


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``python -m sandbox.graph`` as an operator starts it: the .env lines it prints, as a dict."""
    with simulator("graph", ["--state-dir", str(tmp_path / "graph")]) as (_, settings):
        assert "SHAREPOINT_URL" in settings, settings
        yield settings


# -- names a person can read ---------------------------------------------------------------------

def test_sharepoint_scopes_show_as_site_and_library_in_sync_dry_run_status_and_metrics(run, graph, redis_url):
    code, output = run("sync", "sharepoint", "--dry-run", **graph)
    assert code == 0, output
    assert "sharepoint sites/operations / Documents (dry run" in output
    assert "sharepoint sites/finance / Documents: ok" in output
    assert "b!" not in output and "b!" not in run.stderr  # progress lines too

    code, output = run("sync", "sharepoint", **graph)
    assert code == 0 and "sharepoint sites/operations / Engineering Drawings: ok" in output, output
    code, output = run("status", **graph)
    scopes = [line.split("  ")[0] for line in output.splitlines() if line.startswith("sites/")]
    assert sorted(scopes) == ["sites/finance / Documents", "sites/operations / Documents",
                              "sites/operations / Engineering Drawings"], output
    assert "b!" not in output

    code, output = run("status", "--json", **graph)
    (entry,) = [s for s in json.loads(output)["sources"] if s["source"] == "sharepoint"]
    by_name = {s["scope_name"]: s["scope"] for s in entry["scopes"]}
    assert all(scope.startswith("b!") for scope in by_name.values()) and len(by_name) == 3  # ids for machines

    metrics = render_metrics(StateStore.from_url(redis_url))
    drive = by_name["sites/operations / Documents"]
    assert re.search(r'kmrl_last_success_timestamp_seconds\{scope="' + re.escape(drive)
                     + r'",scope_name="sites/operations / Documents",source="sharepoint"\}', metrics), metrics
    assert f'kmrl_lag_seconds{{scope="{drive}",scope_name="sites/operations / Documents"' in metrics


def test_status_needs_no_graph_call_to_show_the_names(run, graph, tmp_path):
    run("sync", "sharepoint", **graph)
    # Graph is gone (a wrong address): status still names every library from the state alone.
    gone = {**graph, "GRAPH_BASE_URL": f"https://127.0.0.1:{free_port()}/v1.0"}
    code, output = run("status", **gone)
    assert code == 0 and "sites/operations / Engineering Drawings" in output, output


def test_the_health_report_names_each_library_beside_its_drive_id(run, graph, redis_url):
    run("sync", "sharepoint", **graph)
    statuses = {scope: status for _, scope, status in StateStore.from_url(redis_url).iter_statuses("sharepoint")}
    health = [scope_health(scope, status, interval_seconds=1800, now=time.time()) for scope, status in statuses.items()]
    assert sorted(h.scope_name for h in health) == ["sites/finance / Documents", "sites/operations / Documents",
                                                    "sites/operations / Engineering Drawings"]
    assert all(h.scope.startswith("b!") for h in health)


def test_the_status_page_names_each_library_and_its_health_follows_failing_scopes(run, graph, redis_url):
    from base.recent import RecentFilter
    from config.settings import Settings
    from connectors.service import Service
    from connectors.status_report import status_data
    from web.status_view import PageData, render_sources

    run("sync", "sharepoint", **graph)
    state = StateStore.from_url(redis_url)
    drive = next(scope for _, scope, status in state.iter_statuses("sharepoint")
                 if status.get("scope_name") == "sites/finance / Documents")
    state.update_status("sharepoint", drive, {"state": "auth_failed", "last_error": "AADSTS7000215: invalid secret"})
    store_report(state, HealthReport(checked_at=time.time(), redis=(True, "ok"), hub=(True, "ok"),
                                     sources=[SourceHealth("sharepoint", "healthy", "fine an hour ago")]))
    service = Service(Settings.from_env({**os.environ, **graph, "STATE_REDIS_URL": redis_url, "KMRL_ENV_FILE": ""}))
    html = render_sources(PageData(status=status_data(service), recent=[], where=RecentFilter(), limit=10,
                                   dead_letters=[]))
    assert f'<td class="scope" title="{drive}">sites/finance / Documents</td>' in html
    assert "sites/operations / Engineering Drawings" in html
    assert "health auth_failed (1 of 3 scopes failing; the hourly check said healthy" in html


def test_sync_scope_takes_a_library_by_the_name_status_shows(run, graph, redis_url):
    code, output = run("sync", "sharepoint", "--scope", "sites/operations / engineering drawings", **graph)
    assert code == 0, output
    assert output.strip().splitlines()[-1].startswith("sharepoint sites/operations / Engineering Drawings: ok")
    statuses = list(StateStore.from_url(redis_url).iter_statuses("sharepoint"))
    assert len(statuses) == 1


def test_sync_of_a_scope_the_source_does_not_have_fails_and_records_nothing(run, redis_url):
    with ServerThread(MaximoSimulator()) as server:
        env = {"MAXIMO_URL": server.url, "MAXIMO_API_KEY": DEFAULT_API_KEYS[0], "MAXIMO_SITE_IDS": "MUTTOM,ALUVA"}
        code, output = run("sync", "maximo", "--scope", "NOSUCHSITE", **env)
        assert code == 1 and "maximo: no scope 'NOSUCHSITE' (its scopes: MUTTOM, ALUVA)" in output, output
        assert list(StateStore.from_url(redis_url).iter_statuses("maximo")) == []
        code, output = run("status", **env)
        assert "NOSUCHSITE" not in output


def test_sync_all_with_a_scope_runs_it_where_it_exists_and_blames_no_other_source(run):
    code, output = run("sync", "all", "--scope", "inbox", FAKE_SCOPES="inbox", FAKE_FILES="1")
    assert "fake inbox: ok" in output and "no scope" not in output, output
    code, output = run("sync", "all", "--scope", "nowhere", FAKE_SCOPES="inbox", FAKE_FILES="1")
    assert code == 1 and "fake: no scope 'nowhere' (its scopes: inbox)" in output, output
    assert "fakeflaky: no scope 'nowhere' (its scopes: a)" in output


# -- errors with their cause -----------------------------------------------------------------------

def test_a_wrong_maximo_port_says_connection_refused_without_urllib3_retry_lines(run):
    port = free_port()
    code, output = run("sync", "maximo", MAXIMO_URL=f"http://127.0.0.1:{port}/maximo",
                       MAXIMO_API_KEY=DEFAULT_API_KEYS[0])
    assert code == 1
    assert "maximo all: error" in output and "Connection refused" in output, output
    assert "Max retries exceeded" not in output + run.stderr
    assert "Retrying (Retry(" not in run.stderr, run.stderr[:2000]
    code, output = run("status", MAXIMO_URL=f"http://127.0.0.1:{port}/maximo", MAXIMO_API_KEY=DEFAULT_API_KEYS[0])
    row = next(line for line in output.splitlines() if line.startswith("all "))
    assert "Connection refused" in row, output


def test_status_last_error_keeps_the_maximo_code_in_view(run):
    with ServerThread(MaximoSimulator()) as server:
        env = {"MAXIMO_URL": server.url, "MAXIMO_API_KEY": "wrong-key-123"}
        run("sync", "maximo", **env)
        _code, output = run("status", **env)
    row = next(line for line in output.splitlines() if line.startswith("all "))
    assert "auth_failed" in row and "BMXAA9549E" in row, output


def test_status_header_does_not_say_healthy_above_a_scope_in_auth_failed(run, redis_url):
    run("sync", "fakeauth")
    store_report(StateStore.from_url(redis_url), HealthReport(
        checked_at=time.time() - 600, redis=(True, "ok"), hub=(True, "ok"),
        sources=[SourceHealth("fakeauth", "healthy", "an hour ago it answered")]))
    _code, output = run("status")
    header = next(line for line in output.splitlines() if line.startswith("fakeauth "))
    assert "health healthy" not in header and "health auth_failed" in header, header
    assert "the hourly check said healthy" in header


def test_a_hub_refusing_the_token_is_auth_failed_with_what_to_fix(run, hub):
    code, output = run("check", "fake", HUB_API_URL=hub.url, HUB_API_TOKEN="not-the-hub-token")
    line = next(line for line in output.splitlines() if line.startswith("FAIL  hub"))
    assert code == 1 and "auth_failed" in line and "HUB_API_TOKEN" in line, line
    assert "TransientError" not in output
    code, output = run("sync", "fake", FAKE_FILES="1", HUB_API_URL=hub.url, HUB_API_TOKEN="not-the-hub-token")
    assert code == 1 and "fake a: auth_failed" in output, output


# -- the command itself ----------------------------------------------------------------------------

def test_version_examples_and_a_plain_description():
    script = Path(sys.executable).with_name("kmrl-connectors")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and re.fullmatch(r"kmrl-connectors \d+\.\d+\.\d+\n", version.stdout)
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0 and "examples:" in helped.stdout and "kmrl-connectors sync email --dry-run" in \
        helped.stdout
    assert "``" not in helped.stdout


def test_dry_run_counts_as_many_changes_as_it_shows_rows(run):
    with ServerThread(MaximoSimulator()) as server:
        sim_env = {"MAXIMO_URL": server.url, "MAXIMO_API_KEY": DEFAULT_API_KEYS[0]}
        code, output = run("sync", "maximo", "--dry-run", **sim_env)
    assert code == 0, output
    rows = [line for line in output.splitlines() if line.split(" ", 1)[0] in ("ingest", "duplicate", "skip")]
    read = re.search(r"maximo all: (\d+) changes read", run.stderr)
    assert read and int(read.group(1)) == len(rows), (run.stderr, output)


def test_status_piped_into_head_ends_without_a_traceback(redis_url, tmp_path):
    state = StateStore.from_url(redis_url)
    for n in range(1500):  # far more than a pipe holds: status is still writing when head has gone
        state.update_status("fake", f"scope-{n:04d}", {"state": "ok", "last_success": time.time()})
    script = Path(sys.executable).with_name("kmrl-connectors")
    env = {**os.environ, "KMRL_ENV_FILE": "", "REDIS_URL": redis_url, "STATE_REDIS_URL": redis_url,
           "LOG_FILE": str(tmp_path / "log.jsonl")}
    result = subprocess.run(["sh", "-c", f"'{script}' status | head -3"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert len(result.stdout.splitlines()) == 3
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
