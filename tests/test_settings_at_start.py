"""A setting that cannot be used, met by the real processes: ``celery -A scheduler beat|worker`` and
gunicorn end with one line naming the variable and the value and exit code 2, not a traceback; and
importing the scheduler reads no setting at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
#: A port nothing listens on: a process that got past its settings would fail on Redis instead.
SILENT_REDIS = "redis://127.0.0.1:1/0"


def run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "LOG_"))}
    environ.update({"KMRL_ENV_FILE": str(tmp_path / "no.env"), "REDIS_URL": SILENT_REDIS,
                    "LOG_FILE": str(tmp_path / "service.log"), "WORKER_LIVENESS_FILE": str(tmp_path / "alive"), **env})
    return subprocess.run([sys.executable, *argv], cwd=PROJECT, env=environ, capture_output=True, text=True,
                          timeout=120)


def assert_one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == "" and result.stderr == line + "\n", result.stderr


@pytest.mark.parametrize("command", ["beat", "worker"])
def test_a_bad_sync_interval_stops_celery_with_one_line(command: str, tmp_path: Path) -> None:
    result = run(["-m", "celery", "-A", "scheduler", command, "--loglevel=info"], tmp_path, MAXIMO_SYNC_MINUTES="abc")
    assert_one_line(result, "settings: MAXIMO_SYNC_MINUTES must be a whole number of minutes, not 'abc'")


@pytest.mark.parametrize("command", ["beat", "worker"])
def test_a_bad_hub_timeout_stops_celery_with_one_line(command: str, tmp_path: Path) -> None:
    result = run(["-m", "celery", "-A", "scheduler", command, "--loglevel=info"], tmp_path, HUB_READ_TIMEOUT="abc")
    assert_one_line(result, "settings: HUB_READ_TIMEOUT must be a number of seconds, not 'abc'")


def test_a_bad_log_level_stops_the_beat_with_one_line(tmp_path: Path) -> None:
    result = run(["-m", "celery", "-A", "scheduler", "beat"], tmp_path, LOG_LEVEL="loud")
    assert_one_line(result, "settings: LOG_LEVEL must be one of debug, info, warning, warn, error, critical, fatal, "
                            "notset, not 'loud'")


def test_a_bad_worker_threads_value_stops_gunicorn_with_one_line(tmp_path: Path) -> None:
    argv = ["-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--check-config", "web.app:create_app()"]
    result = run(argv, tmp_path, WEB_THREADS="abc")
    assert_one_line(result, "settings: WEB_THREADS must be a whole number of threads, not 'abc'")


def test_importing_the_scheduler_reads_no_setting(tmp_path: Path) -> None:
    # Every kind of variable the app reads, each unusable: the import must not look at any of them.
    bad = {"MAXIMO_SYNC_MINUTES": "abc", "HUB_READ_TIMEOUT": "abc", "LOG_LEVEL": "loud", "HUB_OUTBOX_FSYNC": "maybe",
           "TASK_MAX_RETRIES": "x", "CLEANUP_AT": "25:00", "LOG_FILE": str(tmp_path / "logs" / "service.log")}
    result = run(["-c", "import scheduler, tests.scheduler_worker_app"], tmp_path, **bad)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert not (tmp_path / "logs").exists()  # no logger configured itself (creating its file) on import
