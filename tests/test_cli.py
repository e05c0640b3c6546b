"""``kmrl-connectors``: sync, status, check and deadletter in this process, against the fake
sources, the Hub simulator and the Maximo simulator, on real Redis (db 15)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import cli
from base.state import DeadLetter, StateStore
from connectors import registry
from sandbox.maximo import DEFAULT_API_KEYS, MaximoSimulator
from sandbox.servers import ServerThread, free_port
from tests.helpers import fake_files
from tests.reliability.redis_server import PrivateRedis
from tests.scheduler_fakes import FAKE_SOURCES

#: The service's sources plus the fakes: what every command here runs against.
SOURCES = registry.sources_with(*FAKE_SOURCES)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """Runs the CLI with ``env`` on top of a test environment; returns (exit code, stdout)."""
    base = {
        "KMRL_ENV_FILE": str(tmp_path / "no.env"), "REDIS_URL": redis_url, "STATE_REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url, "REDBEAT_REDIS_URL": redis_url,
        "HUB_OUTBOX_DIR": str(tmp_path / "outbox"), "SPOOL_DIR": str(tmp_path / "spool"),
        "DEADLETTER_DIR": str(tmp_path / "deadletter"), "SPOOL_MIN_FREE_MB": "1",
        "LOG_FILE": str(tmp_path / "logs" / "service.log"), "AUDIT_LOG": str(tmp_path / "logs" / "audit.log"),
    }
    # Nothing from the developer's shell may configure a source or point elsewhere.
    for name in list(os.environ):
        if name.startswith(("EMAIL_", "MAXIMO_", "SHAREPOINT_", "WHATSAPP_", "FAKE", "HUB_", "CONTENT_RULES",
                            "RETENTION_", "CELERY_", "REDBEAT_", "STATE_REDIS")):
            monkeypatch.delenv(name)

    def invoke(*argv: str, **env: str) -> tuple[int, str]:
        for name, value in {**base, **env}.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = cli.main(list(argv), sources=SOURCES)
        captured = capsys.readouterr()
        invoke.stderr = captured.err  # type: ignore[attr-defined]
        return code, captured.out

    return invoke


def outbox(tmp_path: Path) -> int:
    folder = tmp_path / "outbox"
    return sum(1 for p in folder.iterdir() if len(p.name) == 64) if folder.is_dir() else 0


# -- sync -------------------------------------------------------------------------------------------

def test_sync_runs_in_process_and_reports_each_scope(run, tmp_path):
    code, output = run("sync", "fake", FAKE_FILES="3")
    assert code == 0
    assert "fake a: ok  fetched=3 new=3 duplicate=0 skipped=0 failed=0 deleted=0" in output
    assert outbox(tmp_path) == 3


def test_sync_without_a_terminal_prints_plain_progress_lines(run):
    code, _ = run("sync", "fake", FAKE_FILES="2")
    err = run.stderr  # progress goes to stderr: one plain line per scope start and end
    assert code == 0 and "fake a: reading changes" in err and "fake a: 2 changes read in" in err
    assert "\r" not in err


def test_dry_run_shows_ingest_duplicate_skip_and_delete_and_changes_nothing(run, tmp_path, redis_url):
    run("sync", "fake", FAKE_FILES="2")
    state = StateStore.from_url(redis_url)
    state.clear_cursor("fake", "a")  # the source lists the two ingested files again
    status = state.get_status("fake", "a")
    code, output = run("sync", "fake", "--dry-run", FAKE_FILES="3", FAKE_EXTRA="setup.exe", FAKE_DELETED="fake-a-1")
    assert code == 0 and "dry run" in output
    rows = [tuple(line.split()[:2]) for line in output.splitlines()
            if line.startswith(("ingest", "duplicate", "skip", "delete"))]
    assert rows == [("duplicate", "fake-a-0.pdf"), ("duplicate", "fake-a-1.pdf"), ("ingest", "fake-a-2.pdf"),
                    ("skip", "setup.exe"), ("delete", "fake-a-1.pdf")]
    assert "rule:executables" in output
    assert outbox(tmp_path) == 2
    assert state.get_cursor("fake", "a") is None and state.get_status("fake", "a") == status
    assert state.get_item("fake", "a", "fake-a-1") is not None


def test_sync_all_runs_every_configured_source_and_one_failure_does_not_stop_the_others(run, tmp_path):
    code, output = run("sync", "all", FAKE_FILES="1", FAKEFLAKY_FILES="1")
    assert code == 1  # fakeauth's credentials are refused
    assert "email: not configured" in output and "sharepoint: not configured" in output
    assert "fakeauth *: auth_failed" in output and "refused the password" in output
    assert "fake a: ok" in output and "fakeflaky a: ok" in output
    assert outbox(tmp_path) == 2


def test_sync_scope_runs_only_the_instance_that_owns_it(run, redis_url):
    code, output = run("sync", "fake", "--scope", "y-a", FAKE_INSTANCES="x,y", FAKE_FILES="1")
    assert code == 0 and "fake y-a: ok" in output and "x-a" not in output
    state = StateStore.from_url(redis_url)
    assert state.get_status("fake", "x-a") == {} and state.get_status("fake", "y-a")["state"] == "ok"


def test_sync_of_an_unconfigured_source_says_what_to_set(run):
    code, output = run("sync", "maximo")
    assert code == 1 and "maximo: not configured (set one of MAXIMO_URL)" in output


# -- status -----------------------------------------------------------------------------------------

def test_status_shows_a_table_per_connector_and_scope(run):
    run("sync", "fake", FAKE_FILES="2", FAKE_SCOPES="inbox,archive")
    code, output = run("status", FAKE_SCOPES="inbox,archive")
    assert code == 0
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("fake "))
    assert "health not checked yet" in lines[header] and "dead letters: 0" in lines[header]
    assert lines[header + 1].split()[:4] == ["SCOPE", "STATE", "LAST", "SUCCESS"]
    rows = {line.split()[0]: line for line in lines[header + 2:header + 4]}
    assert set(rows) == {"inbox", "archive"} and all(" ok " in row and " IST " in row for row in rows.values())
    assert "fakeauth" in output and "(no run recorded yet)" in output


def test_status_json_carries_state_lag_counts_and_errors(run):
    run("sync", "fake", FAKE_FILES="2")
    run("sync", "fakeauth")
    code, output = run("status", "--json")
    data = {s["source"]: s for s in json.loads(output)["sources"]}
    (scope,) = data["fake"]["scopes"]
    assert code == 0 and scope["state"] == "ok" and scope["counts"]["new"] == 2 and scope["items"] == 2
    assert 0 <= scope["lag_seconds"] < 60 and scope["last_error"] == ""
    (refused,) = data["fakeauth"]["scopes"]
    assert refused["scope"] == "*" and refused["state"] == "auth_failed" and "refused" in refused["last_error"]


def test_status_shows_the_days_totals_and_long_shows_whole_errors(run, redis_url):
    run("sync", "fake", FAKE_FILES="2")
    code, output = run("status")
    assert code == 0 and "today (" in output and ", IST): new 2 · updated 0" in output and "failed 0" in output
    error = ("BMXAA9549E - the site MUTTOM is not valid: " + "the whole cause, word by word " * 6
             + "Read-only file system")
    StateStore.from_url(redis_url).update_status("fake", "a", {"last_error": error})
    code, output = run("status")
    assert error not in output and "Read-only file system" not in output  # cut to fit the table
    code, output = run("status", "--long")
    assert code == 0 and f"error of a: {error}" in output
    code, output = run("status", "--json")
    fake = next(s for s in json.loads(output)["sources"] if s["source"] == "fake")
    assert fake["today"]["counts"]["new"] == 2 and fake["scopes"][0]["last_error"] == error


def test_status_shows_each_watcher_with_its_state_mode_host_and_last_event(run, redis_url):
    from watchers.board import WatcherBoard, WatcherRecord

    now = time.time()
    WatcherBoard(StateStore.from_url(redis_url)).publish(
        WatcherRecord(name="email:ops@kmrl.co.in@imap.kmrl.co.in", state="connected", host="vm-1:42", mode="notify",
                      since=now - 60, last_event=now - 5, connections=1), ttl=60, holder=True)
    code, output = run("status")
    line = next(line for line in output.splitlines() if line.startswith("email:ops"))
    assert code == 0 and line.split()[1:4] == ["connected", "notify", "vm-1:42"] and line.count(" IST") == 2
    code, output = run("status", "--json")
    (watcher,) = json.loads(output)["watchers"]
    assert (watcher["state"], watcher["mode"], watcher["host"]) == ("connected", "notify", "vm-1:42")
    assert watcher["last_event"] == pytest.approx(now - 5, abs=0.01) and watcher["error"] == ""


# -- recent -----------------------------------------------------------------------------------------

CIRCULAR_ML = "അഗ്നിശമന മോക്ക് ഡ്രിൽ സർക്കുലർ.txt"
CIRCULAR_TEXT = ("എല്ലാ സ്റ്റേഷനുകളിലും വെള്ളിയാഴ്ച അഗ്നിശമന മോക്ക് ഡ്രിൽ നടത്തും. സുരക്ഷാ ഉദ്യോഗസ്ഥർ "
                 "യാത്രക്കാരെ ഒഴിപ്പിക്കാനുള്ള സമയം രേഖപ്പെടുത്തണം.")


def test_recent_lists_the_documents_a_sync_settled_with_filters(run):
    run("sync", "fake", FAKE_FILES="2", FAKE_EXTRA=CIRCULAR_ML, FAKE_EXTRA_TEXT=CIRCULAR_TEXT)
    code, output = run("recent")
    lines = output.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["TIME", "(IST)", "SOURCE"] and len(lines) == 4
    assert CIRCULAR_ML in lines[1] and " ml " in lines[1] and "Safety" in lines[1] and "uploaded" in lines[1]
    code, output = run("recent", "--language", "ml", "--json")
    (entry,) = json.loads(output)
    assert entry["filename"] == CIRCULAR_ML and entry["department"] == "Safety" and entry["department_terms"]
    assert entry["decision"] == "uploaded" and entry["hub_id"] and entry["source"] == "fake"
    assert len(json.loads(run("recent", "--limit", "1", "--json")[1])) == 1
    assert len(json.loads(run("recent", "--department", "safety", "--json")[1])) == 1
    assert "No recent documents" in run("recent", "--source", "maximo")[1]


# -- check ------------------------------------------------------------------------------------------

def test_check_passes_with_one_line_per_check(run):
    code, output = run("check", "fake")
    lines = output.splitlines()
    assert code == 0, output
    assert [line.split()[:2] for line in lines] == [
        ["PASS", "settings"], ["PASS", "redis"], ["PASS", "redis"], ["PASS", "redis"], ["PASS", "redis"],
        ["PASS", "hub"], ["PASS", "fake"]]


def test_check_fails_for_refused_credentials_and_skips_unconfigured_sources(run):
    code, output = run("check")
    assert code == 1
    assert any(line.startswith("FAIL  fakeauth") and "auth_failed" in line for line in output.splitlines())
    assert any(line.startswith("SKIP  email") for line in output.splitlines())


def test_check_proves_the_hub_over_http(run, hub):
    code, output = run("check", "fake", HUB_API_URL=hub.url, HUB_API_TOKEN=hub.token)
    assert code == 0 and f"{hub.url}/api/v1/health answered 200" in output
    code, output = run("check", "fake", HUB_API_URL=f"http://127.0.0.1:{free_port()}", HUB_API_TOKEN="t0ken-x")
    assert code == 1 and any(line.startswith("FAIL  hub") for line in output.splitlines())


def test_check_proves_maximo_credentials_against_the_simulator(run):
    with ServerThread(MaximoSimulator()) as server:
        code, output = run("check", "maximo", MAXIMO_URL=server.url, MAXIMO_API_KEY=DEFAULT_API_KEYS[0])
        assert code == 0, output
        assert output.splitlines()[-1].startswith("PASS  maximo")
        code, output = run("check", "maximo", MAXIMO_URL=server.url, MAXIMO_API_KEY="wrong-key-123")
        assert code == 1 and output.splitlines()[-1].startswith("FAIL  maximo") and "auth_failed" in output
        assert "wrong-key-123" not in output


def test_check_reports_a_bad_setting(run):
    code, output = run("check", "fake", EMAIL_SYNC_MINUTES="often")
    assert code == 1 and output.startswith("FAIL  settings") and "EMAIL_SYNC_MINUTES" in output


def test_check_reports_a_bad_watcher_setting(run):
    code, output = run("check", "fake", EMAIL_WATCH_POLL_SECONDS="0")
    assert code == 1 and output.startswith("FAIL  settings") and "EMAIL_WATCH_POLL_SECONDS must be more" in output


# -- dead letters -----------------------------------------------------------------------------------

def test_deadletter_retry_replays_kept_bytes_and_records_the_item(run, hub, redis_url, tmp_path):
    files = fake_files(3, prefix="fake-a")
    hub.sim.set_fault("reject", match=hashlib.sha256(files[1].content).hexdigest())
    env = {"HUB_API_URL": hub.url, "HUB_API_TOKEN": hub.token, "FAKE_FILES": "3"}
    code, _ = run("sync", "fake", **env)
    state = StateStore.from_url(redis_url)
    (entry,) = state.list_dead_letters("fake")
    code, output = run("deadletter", "list", **env)
    assert code == 0 and entry.id in output and "kept" in output and "422" in output
    hub.sim.clear_faults()
    code, output = run("deadletter", "retry", "fake", **env)
    assert code == 0 and f"{entry.id} fake {entry.source_id}: replayed" in output
    assert state.list_dead_letters("fake") == [] and not Path(entry.bytes_path).exists()
    record = state.get_item("fake", "a", entry.source_id)
    assert record is not None and record.sha256 == hashlib.sha256(files[1].content).hexdigest()
    audit = [json.loads(line) for line in (tmp_path / "logs" / "audit.log").read_text().splitlines()]
    assert any(a["decision"] == "replayed" and a["source_id"] == entry.source_id for a in audit)
    code, output = run("deadletter", "retry", **env)
    assert code == 0 and "No dead letter" in output


def test_deadletter_without_bytes_points_to_a_full_sync_and_drop_removes_it(run, redis_url):
    state = StateStore.from_url(redis_url)
    entry = state.add_dead_letter(DeadLetter("fake", "a", "msg-9", "message could not be parsed"))
    code, output = run("deadletter", "retry", "--id", entry.id)
    assert code == 1 and "kmrl-connectors sync fake --scope a --full" in output
    assert [e.id for e in state.list_dead_letters()] == [entry.id]
    code, output = run("deadletter", "drop")
    assert code == 2  # dropping everything needs a source or an id
    code, output = run("deadletter", "drop", "fake", "--id", entry.id)
    assert code == 0 and f"dropped {entry.id}" in output and state.list_dead_letters() == []


def test_deadletter_list_names_the_file_and_show_prints_the_whole_entry(run, redis_url):
    state = StateStore.from_url(redis_url)
    reason = "the Hub refused it (422): " + "a long explanation of what was wrong " * 5 + "and its end"
    entry = state.add_dead_letter(DeadLetter("fake", "a", "msg-9", reason, filename="അവധി അപേക്ഷ.pdf",
                                             metadata={"source": {"mailbox": "ops"}}))
    code, output = run("deadletter", "list")
    header, row = output.splitlines()[:2]
    assert code == 0 and "FILENAME" in header and "അവധി അപേക്ഷ.pdf" in row and "and its end" not in row
    code, output = run("deadletter", "show", entry.id)
    assert code == 0 and reason in output and "filename:      അവധി അപേക്ഷ.pdf" in output
    assert '"mailbox": "ops"' in output and "bytes:         not kept" in output
    assert run("deadletter", "show", "nosuchid")[0] == 1
    assert run("deadletter", "show")[0] == 2


def test_deadletter_already_ingested_since_is_resolved(run, redis_url):
    run("sync", "fake", FAKE_FILES="1")
    state = StateStore.from_url(redis_url)
    entry = state.add_dead_letter(DeadLetter("fake", "a", "fake-a-0", "timeout", version="1"))
    code, output = run("deadletter", "retry", "fake")
    assert code == 0 and f"{entry.id} fake fake-a-0: resolved" in output and state.list_dead_letters() == []


def test_probe_watcher_reads_the_watcher_processs_liveness_file(run, tmp_path):
    path = tmp_path / "watcher.alive"
    code, output = run("probe", "watcher", WATCHER_LIVENESS_FILE=str(path))
    assert code == 1 and output.startswith("FAIL  watcher  no liveness file")
    path.touch()
    code, output = run("probe", "watcher")
    assert code == 0 and output.startswith("PASS  watcher  liveness file touched 0 s ago")


def test_probe_web_fails_when_nothing_listens(run):
    code, output = run("probe", "web", WEB_INTERNAL_PORT=str(free_port()))
    assert code == 1 and output.startswith("FAIL  web")


# -- a Redis that does not answer ---------------------------------------------------------------------

#: A password in the Redis URL: it must not reach the output.
REDIS_PASSWORD = "hunter2-redis-pw"
#: Each Redis role from REDIS_URL (its databases 0-3), as an operator who set only REDIS_URL has it.
ROLES_FROM_REDIS_URL = {"STATE_REDIS_URL": "", "CELERY_BROKER_URL": "", "CELERY_RESULT_BACKEND": "",
                        "REDBEAT_REDIS_URL": ""}


@pytest.fixture
def silent_port() -> int:
    """A loopback port where nothing listens."""
    return free_port()


@pytest.mark.parametrize("argv", [("status",), ("status", "--json"), ("deadletter", "list"),
                                  ("deadletter", "retry", "fake"), ("sync", "fake"), ("sync", "fake", "--dry-run")])
def test_a_redis_that_does_not_answer_is_one_line_naming_it_and_what_to_set(run, silent_port, argv):
    code, output = run(*argv, REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{silent_port}/0",
                       **ROLES_FROM_REDIS_URL)
    assert code == 1
    assert output == (f"Redis at redis://127.0.0.1:{silent_port}/3 does not answer (connection refused): "
                      "start it or set REDIS_URL\n")
    assert "Traceback" not in run.stderr and REDIS_PASSWORD not in run.stderr


def test_the_line_names_the_variable_that_set_the_state_redis(run, silent_port):
    code, output = run("status", STATE_REDIS_URL=f"redis://ops:{REDIS_PASSWORD}@127.0.0.1:{silent_port}/4")
    assert code == 1 and output.strip() == (f"Redis at redis://127.0.0.1:{silent_port}/4 does not answer "
                                            "(connection refused): start it or set STATE_REDIS_URL")


def test_check_blames_redis_once_and_does_not_fail_the_sources_for_it(run, silent_port):
    with ServerThread(MaximoSimulator()) as maximo:
        code, output = run("check", REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{silent_port}/0",
                           MAXIMO_URL=maximo.url, MAXIMO_API_KEY=DEFAULT_API_KEYS[0], **ROLES_FROM_REDIS_URL)
    lines = output.splitlines()
    assert code == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert failed == [f"FAIL  redis                          Redis at redis://127.0.0.1:{silent_port} does not "
                      "answer (connection refused): start it or set REDIS_URL (used for state, broker, results, "
                      "redbeat)"], output
    by_name = {line.split()[1]: line for line in lines}
    for name in ("hub", "maximo", "fake", "fakeauth"):  # configured, but their checks need the state store
        assert by_name[name].startswith("SKIP") and "not checked: it needs the state Redis" in by_name[name]
    assert by_name["settings"].startswith("PASS") and REDIS_PASSWORD not in output


def test_check_fails_only_the_redis_role_that_does_not_answer(run, silent_port):
    code, output = run("check", "fake", CELERY_BROKER_URL=f"redis://127.0.0.1:{silent_port}/0")
    failed = [line for line in output.splitlines() if line.startswith("FAIL")]
    assert code == 1 and failed == [f"FAIL  redis broker                   Redis at redis://127.0.0.1:{silent_port}/0 "
                                    "does not answer (connection refused): start it or set CELERY_BROKER_URL"]
    assert "PASS  hub" in output and "PASS  fake" in output  # the state Redis answers: they are checked


@pytest.mark.parametrize("argv", [("status",), ("deadletter", "list"), ("check",)])
def test_the_installed_command_answers_a_redis_outage_without_a_traceback(argv, silent_port, tmp_path):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("EMAIL_", "MAXIMO_", "SHAREPOINT_", "WHATSAPP_", "FAKE", "HUB_", "CELERY_",
                                   "REDBEAT_", "STATE_REDIS"))}
    env.update(KMRL_ENV_FILE="", REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{silent_port}/0",
               LOG_FILE=str(tmp_path / "logs" / "service.log"), AUDIT_LOG=str(tmp_path / "logs" / "audit.log"))
    result = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=Path(cli.__file__).parent, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == "" and REDIS_PASSWORD not in result.stdout
    lines = result.stdout.splitlines()
    assert sum(f"Redis at redis://127.0.0.1:{silent_port}" in line for line in lines) == 1, result.stdout
    assert len(lines) == 1 or argv == ("check",)


def test_probe_beat_names_the_redis_that_does_not_answer(run, silent_port):
    code, output = run("probe", "beat", REDBEAT_REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{silent_port}/7")
    assert code == 1 and output.strip() == (f"FAIL  beat  Redis at redis://127.0.0.1:{silent_port}/7 does not answer "
                                            "(connection refused): start it or set REDBEAT_REDIS_URL")


def test_a_redis_that_refuses_the_password_says_so(run, tmp_path):
    with PrivateRedis(tmp_path / "redis") as server:
        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", "the-right-one")
        admin.close()
        url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
        code, output = run("status", REDIS_URL=url, **ROLES_FROM_REDIS_URL)
    assert code == 1 and output.strip() == (
        f"Redis at redis://127.0.0.1:{server.port}/3 refused the login (invalid username-password pair or user is "
        "disabled): set the right password in REDIS_URL")


def test_a_setting_that_cannot_be_used_is_one_line_not_a_traceback(run) -> None:
    code, output = run("status", HUB_READ_TIMEOUT="abc")
    assert code == 2
    assert output == "settings: HUB_READ_TIMEOUT must be a number of seconds, not 'abc'\n"
    assert "Traceback" not in run.stderr
