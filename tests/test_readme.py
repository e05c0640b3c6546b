"""Every command README.md shows is exercised: run here when it is cheap (the credentials line, the
smoke test per connector, ``python test_connectors.py``), else by the named test or ``make demo``,
which this module checks still exist and still run that command."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.dovecot import require_dovecot
from sandbox.samples import kmrl_samples
from sandbox.stack import SERVICE_VARIABLE_PREFIXES
from tests.conftest import server_url
from tests.readme_commands import readme_command, readme_commands

ROOT = Path(__file__).resolve().parents[1]

#: (README command pattern, the file that runs it, text that file must contain to run it).
EXERCISED_BY: list[tuple[str, str, str]] = [
    (r"make demo$", "tests/test_demo.py", '"sandbox.demo"'),
    (r"make test$", ".ci/run", "make test"),
    (r"make (bench|reliability)$", "Makefile", "with-redis.sh"),
    (r"python -m utils\.credentials_manager$", "tests/test_readme.py",
     "test_credentials_line_prints_the_settings_with_every_secret_masked"),
    (r"python -m sandbox\.(dovecot|maximo|graph|whatsapp|hub)$", "tests/test_readme_promises.py",
     'readme_command(f"python -m sandbox.{module}")'),
    (r"kmrl-connectors --(version|help)$", "tests/test_cli_readable.py",
     "test_version_examples_and_a_plain_description"),
    (r"kmrl-connectors sync$", "tests/test_readme_promises.py",
     "test_a_manual_sync_leaves_its_run_lines_in_the_log_file_without_verbose"),
    (r"kmrl-connectors web$", "tests/test_worker_processes.py", "test_web_command_serves_the_app_for_development"),
    (r'python -c "from test_connectors import test_email_connector', "tests/test_readme.py",
     "test_each_connector_smoke_command_prints_what_it_ingested"),
    (r"python test_connectors\.py$", "tests/test_readme.py", "test_python_test_connectors_runs_the_suite"),
    (r"celery -A scheduler worker --loglevel=info --concurrency=2$", "sandbox/demo.py",
     '"worker", "--loglevel=info", "--concurrency=2"'),
    (r"celery -A scheduler beat --loglevel=info$", "sandbox/demo.py", '"beat", "--loglevel=info"'),
    (r"celery -A scheduler (worker|beat) .*--detach", "tests/test_end_to_end.py", "--detach"),
    (r"celery -A scheduler inspect active$", "tests/test_end_to_end.py", 'readme_command("celery -A scheduler inspect'),
    (r"gunicorn ", "tests/test_web_gunicorn.py", "gunicorn"),
    # No Docker engine runs here: the commands the Dockerfile and docker-compose.yml run are run for real.
    (r"docker (build|run|compose) ", "tests/test_worker_processes.py", "compose_service"),
    (r"kmrl-connectors (status|check|deadletter list|sync email --dry-run|sync all)$", "tests/test_end_to_end.py",
     'readme_command("kmrl-connectors'),
    (r"kmrl-connectors sync SOURCE$", "tests/test_end_to_end.py", "kmrl-connectors sync email"),
    (r"kmrl-connectors deadletter retry --id", "tests/test_cli.py", "test_deadletter_retry_replays_kept_bytes"),
    (r"kmrl-connectors deadletter show <ID>$", "tests/test_cli.py", 'run("deadletter", "show", entry.id)'),
    (r"kmrl-connectors status --long$", "tests/test_cli.py", 'run("status", "--long")'),
    (r"kmrl-connectors recent( |$)", "tests/test_cli.py", 'run("recent", "--language", "ml", "--json")'),
    (r"kmrl-connectors held (list|release|drop)", "tests/test_held.py", 'run("held", "list")'),
    (r"kmrl-connectors run$", "tests/test_worker_processes.py", '"run"'),
    (r"kmrl-connectors subscriptions$", "tests/test_graph_notifications.py",
     'readme_command("kmrl-connectors subscriptions")'),
    (r"kmrl-connectors watch$", "tests/test_imap_watcher.py", 'readme_command("kmrl-connectors watch")'),
    (r"python -m watchers$", "tests/test_imap_watcher.py", '"-m", "watchers"'),
    (r"kmrl-connectors reprocess( |$)", "tests/test_extraction_step.py", '["reprocess", "sharepoint"'),
    # The same request, with the operator token, to the internal listener on loopback.
    (r'curl -X POST -H "Authorization: Bearer \$OPERATOR_TOKEN" https://\S+/sync/maximo/', "tests/test_freshness.py",
     'f"{internal.url}/sync/maximo/MUTTOM", headers=bearer'),
    (r"promtool (check|test) rules deploy/prometheus/", "tests/test_monitoring.py", 'readme_promtool("promtool'),
]


def test_every_readme_command_is_exercised_by_a_test_or_make_demo():
    commands = readme_commands()
    assert len(commands) >= 20, commands
    uncovered = [c for c in commands if not any(re.match(pattern, c) for pattern, _, _ in EXERCISED_BY)]
    assert not uncovered, f"README commands no test runs: {uncovered}"
    for pattern, path, marker in EXERCISED_BY:
        assert any(re.match(pattern, c) for c in commands), f"{pattern!r} matches no README command any more"
        file = ROOT / path
        assert file.is_file(), f"{path} (which runs {pattern!r}) is missing"
        assert marker in file.read_text(encoding="utf-8"), f"{path} no longer runs {pattern!r}"


@pytest.mark.parametrize("target", ["demo", "bench", "reliability", "test"])
def test_every_make_target_the_readme_shows_runs_modules_that_exist(target):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n?)*)", makefile, re.M)
    assert recipe, f"the Makefile has no {target} target"
    for module in re.findall(r"-m ([\w.]+)", recipe.group(1)):
        if module != "pytest":
            path = ROOT / Path(*module.split("."))
            assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"make {target}: {module}"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any service variable (and without a .env file), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARIABLE_PREFIXES)}
    return {**env, "KMRL_ENV_FILE": "", "PYTHONPATH": str(ROOT), **extra}


def run_readme_python(command: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    words = shlex.split(command)
    assert words[0] == "python", command
    return subprocess.run([sys.executable, *words[1:]], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_credentials_line_prints_the_settings_with_every_secret_masked(tmp_path):
    password = "Imap-Pa55word-Kochi"
    env = clean_env(EMAIL_HOST="imap.kmrl.co.in", EMAIL_USER="records@kmrl.co.in", EMAIL_PASSWORD=password,
                    LOG_FILE=str(tmp_path / "log.jsonl"))
    command = readme_command("python -m utils.credentials_manager")
    result = run_readme_python(command, env)
    assert result.returncode == 0, result.stderr
    assert "'host': 'imap.kmrl.co.in'" in result.stdout and "'email': 'records@kmrl.co.in'" in result.stdout
    assert "'password': '***'" in result.stdout
    assert password not in result.stdout + result.stderr
    assert "maximo: maximo is not configured: set MAXIMO_URL" in result.stdout
    # Nothing configured at all: a line per source saying what to set, not a traceback.
    bare = run_readme_python(command, clean_env(LOG_FILE=str(tmp_path / "log.jsonl")))
    assert bare.returncode == 0 and "Traceback" not in bare.stderr, bare.stderr
    assert bare.stdout.splitlines()[0].startswith("email: email is not configured: set EMAIL_USER")


@pytest.mark.parametrize("source", ["email", "maximo", "sharepoint", "whatsapp"])
def test_each_connector_smoke_command_prints_what_it_ingested(source):
    if source == "email":
        require_dovecot()
    command = readme_command('python -c "from test_connectors import test_email_connector')
    result = run_readme_python(command.replace("test_email_connector", f"test_{source}_connector"),
                               clean_env(REDIS_URL=server_url()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FILENAME" in result.stdout and "LANGUAGE" in result.stdout and "DEPARTMENT" in result.stdout
    named = [f.filename for _, f in kmrl_samples().files(source) if source != "whatsapp" or f.mime_type != "image/png"]
    assert all(name in result.stdout for name in named), result.stdout
    assert f"{source}: {kmrl_samples().count(source)} fetched" in result.stdout, result.stdout


def test_python_test_connectors_runs_the_suite():
    result = subprocess.run([sys.executable, *shlex.split(readme_command("python test_connectors.py"))[1:], "-q",
                             "-k", "test_same_seed_same_bytes_other_seed_other_bytes"],
                            env=clean_env(REDIS_URL=server_url()), cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout[-2000:]
