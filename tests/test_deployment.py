"""docker-compose.yml as deployed: Redis URLs come from .env only, Redis requires the password from
.env and is not published, the internal listener is reachable from this host's loopback at most.
The wheel and the image hold the product only: no simulators (sandbox/), tests or benchmarks.

No Docker engine runs here, so the file is read as Compose reads it (YAML with merge keys), and the
Redis command it gives is run for real against Debian's redis-server. The app services' commands
run for real in tests/test_worker_processes.py. The wheel is built for real (offline, with the
locked setuptools) and installed into a fresh virtual environment outside the checkout."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from sandbox.servers import free_port
from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("worker", "beat", "web")
#: Every variable the service reads a Redis URL from (config/settings.py).
REDIS_URL_VARIABLES = {"REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDBEAT_REDIS_URL",
                       "STATE_REDIS_URL"}
PASSWORD = "compose-redis-password-5d0c7e"


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def interpolated(text: str) -> str:
    """What Compose hands the container for ``text`` with no variable of its own: ``$$`` -> ``$``."""
    return text.replace("$$", "$")


def published(port_entry: Any) -> tuple[str, str, str]:
    """(host_ip, host_port, container_port) of a ``ports:`` entry, short or long syntax; host_ip ""
    means every interface, as Compose's default."""
    if isinstance(port_entry, dict):
        return (str(port_entry.get("host_ip", "")), str(port_entry.get("published", "")),
                str(port_entry["target"]))
    text = str(port_entry).split("/", 1)[0]
    match = re.fullmatch(r"(?:(\[[^\]]+\]|[^:]+):)?(?:(\d*):)?(\d+)", text)
    assert match, f"unparsed ports entry {port_entry!r}"
    host_ip, host_port, container = match.groups()
    if host_port is None and host_ip is not None and host_ip.isdigit():  # "8000:8000"
        host_ip, host_port = None, host_ip
    return (host_ip or "").strip("[]"), host_port or "", container


# -- Redis URLs and the password ------------------------------------------------------------------------

def test_no_service_sets_a_redis_url_that_would_override_env() -> None:
    for name, spec in compose()["services"].items():
        environment = spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        assert not REDIS_URL_VARIABLES & set(environment), f"{name} hard-codes a Redis URL"
        assert not any("redis://" in str(v) or "rediss://" in str(v) for v in environment.values()), name


def test_the_app_services_read_env() -> None:
    for name in APP_SERVICES:
        [env_file] = service(name)["env_file"]
        assert env_file == {"path": ".env", "required": True}, name


def test_redis_is_not_published_and_requires_the_password_from_env() -> None:
    redis_service = service("redis")
    assert "ports" not in redis_service and redis_service.get("network_mode") != "host"
    assert redis_service["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")  # unset: compose fails
    script = " ".join(redis_service["command"])
    assert 'requirepass "$$REDIS_PASSWORD"' in script
    assert "--requirepass" not in script  # never an argument: it would show in the process list
    assert "$$REDIS_PASSWORD" in " ".join(redis_service["healthcheck"]["test"])


@pytest.fixture
def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        skip_or_fail("redis-server is not installed (make install installs it)")
    return str(path)


def test_the_compose_redis_command_refuses_clients_without_the_password(tmp_path: Path,
                                                                        redis_server_binary: str) -> None:
    shell, flag, script = service("redis")["command"]
    assert (shell, flag) == ("sh", "-c")
    port = free_port()
    # The image's entrypoint only drops privileges before running its arguments; here they run as they are.
    script = interpolated(script).replace("docker-entrypoint.sh redis-server -",
                                          f"{redis_server_binary} - --port {port} --bind 127.0.0.1 "
                                          f"--dir {tmp_path}", 1)
    env = {**os.environ, "REDIS_PASSWORD": PASSWORD}
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        anonymous = redis.Redis(port=port, socket_connect_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                anonymous.ping()
                pytest.fail("Redis answered a client without the password")
            except redis.AuthenticationError:
                break  # listening, and refusing
            except redis.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "the compose Redis command did not start"
                time.sleep(0.1)
        assert redis.Redis(port=port, password=PASSWORD).ping()
        assert PASSWORD.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()

        check = interpolated(service("redis")["healthcheck"]["test"][1]).replace("redis-cli", f"redis-cli -p {port}")
        healthy = subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0
        wrong = subprocess.run(["sh", "-c", check], env={**env, "REDIS_PASSWORD": "wrong"}, capture_output=True,
                               timeout=30)
        assert wrong.returncode != 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- the web process's listeners ------------------------------------------------------------------------

def test_the_internal_listener_is_published_on_loopback_at_most() -> None:
    web = service("web")
    internal = str(web["environment"]["WEB_INTERNAL_PORT"])
    public = str(web["environment"]["WEB_PUBLIC_PORT"])
    entries = [published(entry) for entry in web.get("ports", [])]
    assert any(container == public for _, _, container in entries), "the webhook's port is not published"
    for host_ip, _, container in entries:
        if container == internal:
            assert host_ip and (host_ip == "localhost" or ipaddress.ip_address(host_ip).is_loopback), \
                f"the internal port {internal} is published on {host_ip or 'every interface'}"


@pytest.mark.parametrize("entry, expected", [
    ("8000:8000", ("", "8000", "8000")),
    ("8001", ("", "", "8001")),
    ("127.0.0.1:8001:8001", ("127.0.0.1", "8001", "8001")),
    ("0.0.0.0:8001:8001/tcp", ("0.0.0.0", "8001", "8001")),
    ("[::1]:8001:8001", ("::1", "8001", "8001")),
    ({"target": 8001, "published": "8001", "host_ip": "127.0.0.1"}, ("127.0.0.1", "8001", "8001")),
])
def test_ports_entries_are_read_as_compose_reads_them(entry: Any, expected: tuple[str, str, str]) -> None:
    assert published(entry) == expected


def test_no_other_service_publishes_a_port_but_monitoring_on_loopback() -> None:
    for name, spec in compose()["services"].items():
        if name == "web":
            continue
        if spec.get("profiles") == ["monitoring"]:
            for host_ip, _, _ in map(published, spec.get("ports", [])):
                assert host_ip and ipaddress.ip_address(host_ip).is_loopback, (name, host_ip)
        else:
            assert "ports" not in spec, name


# -- the monitoring profile (deploy/; tests/test_monitoring.py checks the rules and the dashboard) ---------------

MONITORING = ("prometheus", "grafana")


def test_prometheus_and_grafana_start_only_with_the_monitoring_profile_and_get_no_env_file() -> None:
    services = compose()["services"]
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
        assert "env_file" not in services[name], name  # .env holds every secret; each gets its one variable
    assert set(services["prometheus"]["environment"]) == {"OPERATOR_TOKEN"}
    assert all(not spec.get("profiles") for name, spec in services.items() if name not in MONITORING)
    mounts = dict(volume.split(":")[:2] for volume in services["prometheus"]["volumes"])
    assert mounts["./deploy/prometheus"] == "/etc/prometheus" and (ROOT / "deploy/prometheus/prometheus.yml").is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"][0]
    assert [target for _, _, target in map(published, services["prometheus"]["ports"])] == ["9090"]


def monitoring_script(name: str, moves: dict[str, str]) -> str:
    """The shell script the service runs, as Compose hands it over, with ``moves`` of its paths applied."""
    script = interpolated(service(name)["command"][0])
    for old, new in moves.items():
        assert old in script, old
        script = script.replace(old, new)
    return script


def test_prometheus_gets_the_operator_token_where_its_config_reads_it(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    credentials = config["scrape_configs"][0]["authorization"]["credentials_file"]
    token_file = tmp_path / "operator_token"
    script = monitoring_script("prometheus", {credentials: str(token_file),
                                              "exec /bin/prometheus": "exec echo started"})
    token = "compose-operator-token-0b1e6f2a9c"
    done = subprocess.run(["sh", "-c", script], env={"OPERATOR_TOKEN": token, "PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and done.stdout.startswith("started"), done.stderr
    assert token_file.read_text(encoding="utf-8") == token  # no newline: it is the whole credential
    assert token_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("name, variable", [("prometheus", "OPERATOR_TOKEN"),
                                            ("grafana", "GF_SECURITY_ADMIN_PASSWORD")])
def test_a_monitoring_service_without_its_secret_stops_saying_which(tmp_path: Path, name: str,
                                                                   variable: str) -> None:
    moves = {"/prometheus/operator_token": str(tmp_path / "token")} if name == "prometheus" else {}
    done = subprocess.run(["sh", "-c", monitoring_script(name, moves)],
                          env={variable: "", "PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert ("OPERATOR_TOKEN" if name == "prometheus" else "GRAFANA_ADMIN_PASSWORD") in done.stderr
    assert not (tmp_path / "token").exists()


def test_the_web_command_binds_the_listeners_the_app_expects() -> None:
    """No --bind: gunicorn takes both binds from the same WEB_* variables the app routes by."""
    command = service("web")["command"]
    assert "--bind" not in command and "-b" not in command and not any(c.startswith("--bind=") for c in command)
    assert command[:3] == ["gunicorn", "-c", "python:web.gunicorn_conf"]
    environment = service("web")["environment"]
    assert environment["WEB_PUBLIC_PORT"] != environment["WEB_INTERNAL_PORT"]


def test_the_image_exposes_both_listeners() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [expose] = re.findall(r"^EXPOSE (.+)$", dockerfile, re.M)
    assert expose.split() == ["8000", "8001"]


# -- what the wheel and the image hold ------------------------------------------------------------------

#: What a checkout holds besides the product: run from a checkout only, never shipped.
NOT_SHIPPED = ("sandbox", "tests", "bench", "test_connectors.py", "scripts")
#: Left out of the copy the wheel is built from: local state and earlier builds (a stale build/ would
#: otherwise leak old files into the wheel).
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "var", "logs", "build", "dist", "*.egg-info", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".bench")
#: A Lua script placed in the copy: any script under base/ must ship beside its module.
PROBE_LUA = "base/lua_probe/probe.lua"


def top_level(name: str) -> str:
    return name.split("/", 1)[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline from a copy of this checkout (the checkout stays clean)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    (source / PROBE_LUA).parent.mkdir(parents=True)
    (source / PROBE_LUA).write_text("return redis.call('PING')\n", encoding="utf-8")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "--wheel-dir", str(root / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    [path] = (root / "dist").glob("kmrl_connectors-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def product_top_level() -> set[str]:
    """The top-level packages and modules pyproject.toml declares."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = {pattern.split(".", 1)[0] for pattern in setuptools["packages"]["find"]["include"]}
    return packages | {f"{module}.py" for module in setuptools["py-modules"]}


def test_the_wheel_holds_the_product_and_nothing_run_from_a_checkout(wheel_names: list[str]) -> None:
    shipped = {top_level(name) for name in wheel_names if not top_level(name).endswith(".dist-info")}
    assert shipped == {"base", "config", "connectors", "utils", "web", "watchers", "cli.py", "scheduler.py"}
    assert not [name for name in wheel_names if top_level(name) in NOT_SHIPPED]


def test_the_wheel_holds_every_product_module_and_data_file(wheel_names: list[str]) -> None:
    expected = {path.relative_to(ROOT).as_posix() for package in ("base", "config", "connectors", "utils", "web",
                                                                                  "watchers")
                for path in (ROOT / package).rglob("*")
                if path.is_file() and path.suffix in (".py", ".toml", ".lua") and "__pycache__" not in path.parts}
    assert {"config/departments.toml", "config/content_rules.toml"} <= expected
    assert expected | {"cli.py", "scheduler.py", PROBE_LUA} <= set(wheel_names)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment holding the wheel, its dependencies taken from this one's
    site-packages by path (so this checkout's editable install is not seen); returns its bin/."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    target = venv / "bin" / "python"
    site = subprocess.run([str(target), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(target), "install", "--no-deps", "--no-index",
                           "--quiet", str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def outside_the_checkout(tmp_path: Path) -> dict[str, Any]:
    """subprocess.run options that keep this checkout off sys.path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {"cwd": tmp_path, "env": {**env, "KMRL_ENV_FILE": ""}, "capture_output": True, "text": True,
            "timeout": 120, "check": False}


IMPORT_EVERYTHING = """
import importlib, importlib.util, sys, zipfile
names = [n[:-3].replace("/", ".").removesuffix(".__init__") for n in zipfile.ZipFile(sys.argv[1]).namelist()
         if n.endswith(".py")]
for name in names:
    importlib.import_module(name)
from base.enrichment import department_rules, rules
from pathlib import Path
print(len(names))
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & {"sandbox", "tests", "bench", "test_connectors"})))
print(importlib.util.find_spec("sandbox") is None and importlib.util.find_spec("test_connectors") is None)
print(Path(department_rules.DEFAULT_DEPARTMENTS_FILE).is_file() and Path(rules.DEFAULT_RULES_FILE).is_file())
print(sys.modules["cli"].__file__)
"""


def test_every_module_of_the_installed_wheel_imports_without_sandbox_or_tests(installed: Path, wheel: Path,
                                                                                tmp_path: Path) -> None:
    result = subprocess.run([str(installed / "python"), "-c", IMPORT_EVERYTHING, str(wheel)],
                            **outside_the_checkout(tmp_path))
    assert result.returncode == 0, result.stderr
    modules, imported, absent, data_files, cli_file = result.stdout.splitlines()
    assert int(modules) > 40
    assert imported == ""  # no product module reaches for sandbox/, tests/, bench/ or test_connectors
    assert absent == "True"
    assert data_files == "True"  # the department and content rules are read from the installed package
    assert Path(cli_file).is_relative_to(installed.parent)


def test_the_installed_console_script_runs_without_a_checkout(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(installed / "kmrl-connectors"), "--help"], **outside_the_checkout(tmp_path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"usage: kmrl-connectors .*\{sync,reprocess,status,[a-z,]*probe\}",
                     result.stdout, re.S)


def dockerfile_copies() -> list[list[str]]:
    """The sources of each COPY of the Dockerfile (its last word is the destination)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]


def test_the_image_copies_the_product_and_nothing_run_from_a_checkout() -> None:
    sources = [source.rstrip("/") for copy in dockerfile_copies() for source in copy]
    assert "." not in sources and not [s for s in sources if s.startswith("--")]
    assert not set(sources) & set(NOT_SHIPPED)
    assert product_top_level() <= set(sources)  # what the wheel ships, the image runs
    setuptools_reads = {"pyproject.toml", "README.md", "LICENSE"}  # pip install -e . in the image
    assert setuptools_reads <= set(sources)
    assert all((ROOT / source).exists() for source in sources)


def test_the_build_context_leaves_out_what_runs_from_a_checkout() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {"sandbox", "tests", "bench", "test_connectors.py"} <= ignored
