"""What README.md promises an operator, kept by the real processes:

- ``celery ... --detach --pidfile=var/NAME.pid --logfile=logs/NAME.log`` creates the folders it needs
  (before detaching: a folder it cannot create is one line and exit code 2, not exit 0 with nothing
  started), and the log file named by ``--logfile`` receives the process's logs, LOG_FILE empty or not;
- a WORKER_LIVENESS_FILE in a folder that does not exist yet is created, so ``probe worker`` passes;
- a manual ``kmrl-connectors sync`` leaves its run lines in the log file without ``-v``;
- ``.env`` is found in the current folder, then beside the install, or named by KMRL_ENV_FILE, and a
  command that found none says so;
- log files written by several processes survive rotation from outside (logrotate moves the file);
- gunicorn's access log is JSON, query values masked;
- every sandbox simulator starts on its own (``python -m sandbox.NAME``) and prints the .env lines with
  which ``kmrl-connectors check`` passes against it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import config.settings as settings_module
from config.settings import find_env_file
from sandbox.dovecot import require_dovecot
from sandbox.servers import free_port
from sandbox.stack import session_members, wait_until_session_gone
from tests.conftest import flushed_db_url
from tests.readme_commands import readme_command
from tests.simulator_mains import simulator
from tests.test_cli import run as _cli_run  # noqa: F401 - registers the fixture `run`
from utils.logging import configure_logging, get_logger

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def run(_cli_run):  # noqa: F811 - the fixture of tests/test_cli.py, under the name its tests use
    return _cli_run


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, str]:
    """A service process's environment: test databases, folders under tmp_path, no .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "LOG_", "EMAIL_", "MAXIMO_"))}
    env.update({"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KMRL_ENV_FILE": "",
                "PYTHONPATH": str(ROOT), "CELERY_BROKER_URL": flushed_db_url(5),
                "CELERY_RESULT_BACKEND": flushed_db_url(6), "REDBEAT_REDIS_URL": flushed_db_url(7),
                "STATE_REDIS_URL": flushed_db_url(8), "HUB_OUTBOX_DIR": str(tmp_path / "outbox"),
                "SPOOL_DIR": str(tmp_path / "spool"), "DEADLETTER_DIR": str(tmp_path / "deadletter"),
                "SPOOL_MIN_FREE_MB": "1", "AUDIT_LOG": str(tmp_path / "audit.log")})
    return env


class Daemon:
    """A detached Celery process, known by its pid file; ``stop()`` ends its whole session."""

    def __init__(self, pidfile: Path) -> None:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, f"no pid file {pidfile}: the detached process did not start"
            time.sleep(0.05)
        self.pid = int(pidfile.read_text().strip())
        self.sid = int(Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[3])

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not wait_until_session_gone(self.sid, timeout=25):
            for pid in session_members(self.sid):
                os.kill(pid, signal.SIGKILL)


def wait_for_line(path: Path, text: str, timeout: float = 45) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text(encoding="utf-8")):
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never reached {path}: {path.read_text() if path.exists() else 'no file'}")


# -- detached processes ------------------------------------------------------------------------------

@pytest.mark.parametrize("log_file_setting", ["", "logs/kmrl-connectors.log"])
def test_detached_worker_and_beat_create_their_folders_and_log_to_their_logfile(service_env, tmp_path,
                                                                                 log_file_setting):
    folder = tmp_path / "install"  # a fresh checkout: no var/, no logs/, no run/
    folder.mkdir()
    env = {**service_env, "LOG_FILE": log_file_setting,
           "WORKER_LIVENESS_FILE": str(folder / "run" / "kmrl" / "worker.alive")}
    daemons = []
    try:
        for name, extra in (("worker", ["--concurrency=1"]), ("beat", [])):
            launched = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "scheduler", name, "--loglevel=info", *extra, "--detach",
                 f"--pidfile=var/{name}.pid", f"--logfile=logs/{name}.log"],
                cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False)
            assert launched.returncode == 0, launched.stdout + launched.stderr
            daemons.append(Daemon(folder / "var" / f"{name}.pid"))
        worker_log = wait_for_line(folder / "logs" / "worker.log", "ready.")
        beat_log = wait_for_line(folder / "logs" / "beat.log", "beat_lock_acquired")
        assert all(json.loads(line)["timestamp"].endswith("Z") for line in worker_log.splitlines())  # UTC
        assert "beat_lock_acquired" not in worker_log and "ready." not in beat_log
        alive = Path(env["WORKER_LIVENESS_FILE"])
        deadline = time.monotonic() + 30
        while not alive.exists():
            assert time.monotonic() < deadline, "the worker never created its liveness file's folder"
            time.sleep(0.1)
        probe = subprocess.run([str(VENV_BIN / "kmrl-connectors"), "probe", "worker"], cwd=folder, env=env,
                               capture_output=True, text=True, timeout=60, check=False)
        assert probe.returncode == 0 and probe.stdout.startswith("PASS"), probe.stdout + probe.stderr
    finally:
        for daemon in daemons:
            daemon.stop()


def test_a_detached_process_whose_folder_cannot_be_made_says_so_and_exits_2(service_env, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "scheduler", "beat", "--detach", f"--pidfile={tmp_path}/var/beat.pid",
         f"--logfile={blocker}/beat.log"],
        cwd=tmp_path, env={**service_env, "LOG_FILE": ""}, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"--logfile={blocker}/beat.log: cannot create the folder {blocker}" in result.stderr
    assert "nothing was started" in result.stderr


# -- the command line's log lines ----------------------------------------------------------------------

def test_a_manual_sync_leaves_its_run_lines_in_the_log_file_without_verbose(run, tmp_path):
    code, _ = run("sync", "fake", FAKE_FILES="2")
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "logs" / "service.log").read_text().splitlines()]
    finished = [line for line in lines if line["event"] == "run_finished"]
    assert finished and finished[-1]["connector"] == "fake" and finished[-1]["new"] == 2
    assert "run_started" not in run.stderr  # the console stays at warnings


def test_log_files_keep_receiving_lines_after_logrotate_moves_them(tmp_path):
    path = tmp_path / "logs" / "kmrl-connectors.log"
    try:
        configure_logging(log_file=str(path), level="INFO", force=True)
        log = get_logger("tests.rotation")
        log.info("before_rotation")
        path.rename(path.with_suffix(".log.1"))  # what logrotate does (another process may be writing)
        log.info("after_rotation")
        logging.shutdown()
        assert "before_rotation" in path.with_suffix(".log.1").read_text()
        assert "after_rotation" in path.read_text() and "before_rotation" not in path.read_text()
    finally:
        configure_logging(log_file="", force=True)


# -- .env --------------------------------------------------------------------------------------------------

def test_env_file_is_found_here_then_beside_the_install_or_named(tmp_path, monkeypatch):
    install, here = tmp_path / "install", tmp_path / "elsewhere"
    install.mkdir()
    here.mkdir()
    monkeypatch.setattr(settings_module, "PROJECT_ROOT", install)
    monkeypatch.delenv("KMRL_ENV_FILE", raising=False)
    missing = find_env_file(cwd=str(here))
    assert missing.path == "" and "no .env file" in missing.note and "KMRL_ENV_FILE" in missing.note
    (install / ".env").write_text("REDIS_URL=redis://beside:6379/0\n")
    assert find_env_file(cwd=str(here)).path == str(install / ".env")
    (here / ".env").write_text("REDIS_URL=redis://here:6379/0\n")
    assert find_env_file(cwd=str(here)).path == str(here / ".env")
    named = tmp_path / "kmrl.env"
    named.write_text("")
    monkeypatch.setenv("KMRL_ENV_FILE", str(named))
    assert find_env_file(cwd=str(here)).path == str(named)
    monkeypatch.setenv("KMRL_ENV_FILE", str(tmp_path / "gone.env"))
    assert "is not a file" in find_env_file(cwd=str(here)).note
    monkeypatch.setenv("KMRL_ENV_FILE", "")
    assert find_env_file(cwd=str(here)) == settings_module.EnvFile()  # none, on purpose: no warning


def test_a_command_that_found_no_env_file_says_so(service_env, tmp_path):
    if (ROOT / ".env").exists():
        pytest.skip("this checkout has a .env beside it")
    env = {k: v for k, v in service_env.items() if k != "KMRL_ENV_FILE"}
    result = subprocess.run([str(VENV_BIN / "kmrl-connectors"), "status"], cwd=tmp_path,
                            env={**env, "LOG_FILE": str(tmp_path / "log.jsonl")}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"warning: no .env file in {tmp_path} nor beside the install"), result.stderr


# -- gunicorn's access log ------------------------------------------------------------------------------

def test_gunicorn_access_log_is_json_with_query_values_masked(service_env, tmp_path):
    public, internal = free_port(), free_port()
    access = tmp_path / "access.log"
    env = {**service_env, "LOG_FILE": "", "WEB_PUBLIC_PORT": str(public), "WEB_INTERNAL_PORT": str(internal),
           "WEB_ACCESS_LOG": str(access), "WEB_CONCURRENCY": "1", "WHATSAPP_VERIFY_TOKEN": "verify-me-please"}
    process = subprocess.Popen([str(VENV_BIN / "gunicorn"), "-c", "python:web.gunicorn_conf", "web.app:create_app()"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{internal}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        url = (f"http://127.0.0.1:{public}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me-please"
               f"&hub.challenge=1158201444")
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200
        content = wait_for_line(access, "/webhooks/whatsapp", timeout=15)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [json.loads(line) for line in content.splitlines()]
    hook = next(line for line in lines if line["path"] == "/webhooks/whatsapp")
    assert hook["event"] == "http_access" and hook["status"] == 200 and hook["method"] == "GET"
    assert hook["query"] == "hub.mode=***&hub.verify_token=***&hub.challenge=***"
    assert "verify-me-please" not in content and hook["timestamp"].endswith("Z")


# -- simulators on their own ---------------------------------------------------------------------------

@pytest.fixture
def check_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERY_", "LOG_", "EMAIL_", "MAXIMO_", "SHAREPOINT_", "WHATSAPP_", "HUB_"))}
    url = flushed_db_url(9)
    yield {**env, "KMRL_ENV_FILE": "", "REDIS_URL": url, "STATE_REDIS_URL": url, "CELERY_BROKER_URL": url,
           "CELERY_RESULT_BACKEND": url, "REDBEAT_REDIS_URL": url, "LOG_FILE": str(tmp_path / "log.jsonl"),
           "HUB_OUTBOX_DIR": str(tmp_path / "outbox")}


@pytest.mark.parametrize(("module", "source"), [("maximo", "maximo"), ("graph", "sharepoint"),
                                                ("whatsapp", "whatsapp"), ("dovecot", "email"), ("hub", "hub")])
def test_each_simulator_started_on_its_own_prints_lines_that_check_accepts(module, source, check_env, tmp_path):
    if module == "dovecot":
        require_dovecot()
    args = {"graph": ["--state-dir", str(tmp_path / "graph")], "hub": ["--data-dir", str(tmp_path / "hub")],
            }.get(module, [])
    words = readme_command(f"python -m sandbox.{module}").split()  # README "Try it for real", as written
    assert words[:2] == ["python", "-m"] and len(words) == 3
    with simulator(words[2].removeprefix("sandbox."), args, on_stderr=module == "hub") as (listening, settings):
        assert listening.split(" listening on ")[1].startswith(("http://127.0.0.1:", "https://127.0.0.1:",
                                                                "imaps://127.0.0.1:")), listening
        argv = ["check"] if source == "hub" else ["check", source]
        result = subprocess.run([str(VENV_BIN / "kmrl-connectors"), *argv], env={**check_env, **settings},
                                cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    lines = result.stdout.splitlines()
    name = "hub" if source == "hub" else source
    line = next((line for line in lines if line.split()[1:2] and line.split()[1].split("[")[0] == name), "")
    assert line.startswith("PASS"), result.stdout + result.stderr
