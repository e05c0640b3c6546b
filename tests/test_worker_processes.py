"""Real processes: the commands docker-compose.yml and the Dockerfile run, and a worker SIGKILLed
mid-run whose task is delivered again and completes. Broker db 5, results 6, RedBeat 7, state 8."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

import scheduler
from base.health import load_report
from base.state import StateStore, metric_field
from sandbox.servers import free_port
from tests.conftest import flushed_db_url, make_settings
from tests.scheduler_fakes import release_held_runs

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: /metrics is on the web process's internal listener, behind the operator token (web/operator.py).
OPERATOR_TOKEN = "worker-processes-operator-token-d41c"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- process output ---\n{tail}")


def compose_service(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]


def healthcheck_command() -> list[str]:
    line = next(ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.startswith("HEALTHCHECK"))
    return json.loads(line.split(" CMD ", 1)[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a service process: test databases, folders under tmp_path."""
    values = dict(os.environ)
    values.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KMRL_ENV_FILE": str(tmp_path / "no.env"),
        "CELERY_BROKER_URL": flushed_db_url(5), "CELERY_RESULT_BACKEND": flushed_db_url(6),
        "REDBEAT_REDIS_URL": flushed_db_url(7), "STATE_REDIS_URL": flushed_db_url(8),
        "HUB_API_URL": "", "HUB_OUTBOX_DIR": str(tmp_path / "outbox"), "SPOOL_DIR": str(tmp_path / "spool"),
        "DEADLETTER_DIR": str(tmp_path / "deadletter"), "SPOOL_MIN_FREE_MB": "1",
        "LOG_FILE": str(tmp_path / "logs" / "service.log"), "AUDIT_LOG": str(tmp_path / "logs" / "audit.log"),
        "WORKER_LIVENESS_FILE": str(tmp_path / "worker.alive"), "CONTENT_RULES_FILE": "",
        # These tests count runs; the first worker's start sync (tests/test_triggers.py) would add some.
        "SYNC_AT_START": "0",
    })
    return values


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen, Path]]]:
    """Starts commands in their own process group; kills whatever is left at the end."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], environ: dict[str, str], name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}-{len(started)}.out"
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def stop(proc: subprocess.Popen, *, timeout: float = 40) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(timeout)


def producer(environ: dict[str, str], tmp_path: Path) -> StateStore:
    """Points this process's app at the same broker and state, to send tasks; returns the state store."""
    settings = make_settings(tmp_path, environ["STATE_REDIS_URL"], broker_url=environ["CELERY_BROKER_URL"],
                             result_backend=environ["CELERY_RESULT_BACKEND"],
                             redbeat_redis_url=environ["REDBEAT_REDIS_URL"])
    scheduler.configure(settings)
    return StateStore.from_url(settings.state_redis_url)


def test_compose_worker_command_runs_tasks_and_its_healthcheck_follows_it(env, processes, tmp_path):
    service = compose_service("worker")
    env.update(KMRL_ROLE=service["environment"]["KMRL_ROLE"])
    proc, log = processes(service["command"], env, "worker")
    alive = Path(env["WORKER_LIVENESS_FILE"])
    wait_for(alive.exists, timeout=30, what="the worker's liveness file", proc=proc, log=log)
    probe = subprocess.run(healthcheck_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    state = producer(env, tmp_path)
    scheduler.health.delay()
    report = wait_for(lambda: load_report(state), timeout=30, what="a health report", proc=proc, log=log)
    assert report["redis"]["ok"] and report["hub"]["ok"] and report["sources"] == []
    assert stop(proc) == 0
    assert not alive.exists()
    probe = subprocess.run(healthcheck_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "no liveness file" in probe.stdout


def test_compose_beat_command_takes_the_redbeat_lock_and_schedules_cleanup_at_2030_utc(env, processes):
    service = compose_service("beat")
    env.update(KMRL_ROLE=service["environment"]["KMRL_ROLE"])
    proc, log = processes(service["command"], env, "beat")
    beat_redis = redis.Redis.from_url(env["REDBEAT_REDIS_URL"], decode_responses=True)
    wait_for(lambda: beat_redis.exists("redbeat::lock") and beat_redis.zscore("redbeat::schedule", "redbeat:cleanup"),
             timeout=30, what="the RedBeat lock and schedule", proc=proc, log=log)
    # RedBeat scores an entry by its next due time, computed to within a second or so.
    score = beat_redis.zscore("redbeat::schedule", "redbeat:cleanup")
    assert score is not None
    due = datetime.fromtimestamp(round(score / 60) * 60, UTC)
    assert (due.hour, due.minute) == (20, 30)
    assert set(beat_redis.zrange("redbeat::schedule", 0, -1)) >= {
        "redbeat:sync-email", "redbeat:sync-whatsapp", "redbeat:sync-maximo", "redbeat:sync-sharepoint",
        "redbeat:health-check"}
    probe = subprocess.run(healthcheck_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert stop(proc) == 0
    assert not beat_redis.exists("redbeat::lock")  # released on shutdown: a standby takes over at once


def test_compose_web_command_serves_probes_and_metrics(env, processes):
    service = compose_service("web")
    public_port, internal_port = free_port(), free_port()
    # The compose command as it is; its listeners moved to free loopback ports (tests listen on loopback only).
    env.update(KMRL_ROLE=service["environment"]["KMRL_ROLE"], OPERATOR_TOKEN=OPERATOR_TOKEN,
               WEB_PUBLIC_HOST="127.0.0.1", WEB_PUBLIC_PORT=str(public_port),
               WEB_INTERNAL_HOST="127.0.0.1", WEB_INTERNAL_PORT=str(internal_port))
    proc, log = processes(list(service["command"]), env, "web")
    base = f"http://127.0.0.1:{internal_port}"

    def answers() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or its workers still loading the app
            return False

    wait_for(answers, timeout=30, what="gunicorn to answer", proc=proc, log=log)
    StateStore.from_url(env["STATE_REDIS_URL"]).incr_metric("kmrl_documents_total",
                                                            {"source": "email", "outcome": "new"}, 5)
    response = requests.get(f"{base}/metrics", headers=OPERATOR, timeout=5)
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["kmrl_documents"].samples[0].value == 5
    assert requests.get(f"http://127.0.0.1:{public_port}/metrics", headers=OPERATOR, timeout=5).status_code == 404
    probe = subprocess.run(healthcheck_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    stop(proc)


def test_web_command_serves_the_app_for_development(env, processes):
    port, internal_port = free_port(), free_port()
    env.update(WEB_INTERNAL_PORT=str(internal_port), OPERATOR_TOKEN=OPERATOR_TOKEN)
    proc, log = processes([str(VENV_BIN / "kmrl-connectors"), "web", "--port", str(port)], env, "web-dev")

    def metrics() -> str:
        try:
            response = requests.get(f"http://127.0.0.1:{internal_port}/metrics", headers=OPERATOR, timeout=5)
        except requests.RequestException:
            return ""
        return response.text if response.status_code == 200 else ""

    StateStore.from_url(env["STATE_REDIS_URL"]).incr_metric("kmrl_runs_total", {"source": "email", "state": "ok"})
    text = wait_for(metrics, timeout=30, what="the development server", proc=proc, log=log)
    assert 'kmrl_runs_total{source="email",state="ok"} 1.0' in text
    stop(proc)


def test_run_command_starts_a_worker_with_an_embedded_beat_the_web_app_and_the_watcher(env, processes, tmp_path):
    public_port, internal_port = free_port(), free_port()
    env.update(WEB_PUBLIC_HOST="127.0.0.1", WEB_PUBLIC_PORT=str(public_port), WEB_INTERNAL_HOST="127.0.0.1",
               WEB_INTERNAL_PORT=str(internal_port), WATCHER_LIVENESS_FILE=str(tmp_path / "watcher.alive"))
    proc, log = processes([str(VENV_BIN / "kmrl-connectors"), "run", "--concurrency", "1"], env, "run")
    beat_redis = redis.Redis.from_url(env["REDBEAT_REDIS_URL"])

    def web_answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{internal_port}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_for(lambda: Path(env["WORKER_LIVENESS_FILE"]).exists() and beat_redis.exists("redbeat::lock"),
             timeout=40, what="the worker and its beat", proc=proc, log=log)
    wait_for(web_answers, timeout=40, what="the web app", proc=proc, log=log)
    wait_for(lambda: Path(env["WATCHER_LIVENESS_FILE"]).exists(), timeout=40, what="the watcher", proc=proc, log=log)
    # SIGTERM to run stops the whole set: nothing of it is left listening or running.
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(90) == 0, log.read_text()[-3000:]
    assert not web_answers()
    assert not Path(env["WATCHER_LIVENESS_FILE"]).exists()  # the watcher stopped (and removed its file)


def test_run_command_stops_the_set_when_one_process_dies(env, processes):
    public_port, internal_port = free_port(), free_port()
    env.update(WEB_PUBLIC_HOST="127.0.0.1", WEB_PUBLIC_PORT=str(public_port), WEB_INTERNAL_HOST="127.0.0.1",
               WEB_INTERNAL_PORT=str(internal_port))
    proc, log = processes([str(VENV_BIN / "kmrl-connectors"), "run", "--concurrency", "1", "--without", "web"],
                          env, "run-dies")
    wait_for(lambda: Path(env["WORKER_LIVENESS_FILE"]).exists(), timeout=40, what="the worker", proc=proc, log=log)
    worker = int(subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "celery"], capture_output=True, text=True,
                                check=False).stdout.split()[0])
    os.kill(worker, signal.SIGKILL)
    assert proc.wait(60) != 0  # an outage is reported, so the init system restarts the set


def test_a_worker_killed_mid_run_is_redelivered_and_the_run_completes(env, processes, tmp_path):
    # The first run stops after 10 of its 12 files until released, so the kill lands mid-run however
    # fast or slow the machine is; documents go in batches of 4 (read two batches ahead of their
    # records), so progress shows.
    env.update(CELERY_VISIBILITY_TIMEOUT="5", CELERY_UNACKED_RESTORE_INTERVAL="1", CELERY_UNACKED_RESTORE_THROTTLE="1",
               LOCK_TTL_SECONDS="3", CURSOR_SAVE_EVERY="1", FAKE_FILES="12", FAKE_HOLD_AFTER="10",
               ACK_BATCH_SIZE="4")
    command = [sys.executable, "-m", "celery", "-A", "tests.scheduler_worker_app", "worker", "-P", "prefork",
               "-c", "1", "--without-mingle", "--without-gossip", "--loglevel=info"]
    first, log = processes(command, env, "first")
    state = producer(env, tmp_path)
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    scheduler.sync_scope.apply_async(args=("fake", "0", "a"), soft_time_limit=60, time_limit=90)
    held = state.key("test", "fake", "held")
    wait_for(lambda: state.redis.get(held) == "1" and state.count_items("fake", "a") >= 3, timeout=60,
             what="the first run to be under way", proc=first, log=log)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    done_before = state.count_items("fake", "a")
    assert done_before < 12 and broker.hlen("unacked") == 1
    release_held_runs(state, "fake")  # the redelivered run goes through
    second, log = processes(command, env, "second")
    wait_for(lambda: state.get_status("fake", "a").get("state") == "ok" and state.count_items("fake", "a") == 12,
             timeout=60, what="the redelivered run to finish", proc=second, log=log)
    wait_for(lambda: broker.hlen("unacked") == 0, timeout=10, what="the message to be acknowledged")
    assert state.redis.get(state.key("test", "fake", "runs")) == "2"
    assert state.get_cursor("fake", "a") == 12
    outbox = [p for p in Path(env["HUB_OUTBOX_DIR"]).iterdir() if len(p.name) == 64]
    assert len(outbox) == 12
    counters, _ = state.metrics()
    assert counters[metric_field("kmrl_documents_total", {"source": "fake", "outcome": "new"})] == 12
    stop(second)


def test_commands_in_the_compose_file_are_the_documented_ones():
    assert compose_service("worker")["command"] == shlex.split("celery -A scheduler worker --loglevel=info "
                                                               "--concurrency=2")
    assert compose_service("beat")["command"] == shlex.split("celery -A scheduler beat --loglevel=info")
    redis_command = " ".join(compose_service("redis")["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert "USER kmrl" in (ROOT / "Dockerfile").read_text()
