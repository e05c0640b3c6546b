"""A simulator served from a process of its own (sandbox.sim_process), steered by calls over a pipe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.maximo import DEFAULT_API_KEYS
from sandbox.sim_process import SimulatorError, SimulatorProcess, graph_over_tls, maximo_over_tls, request_count
from sandbox.tls import CertAuthority


def work_order_count(sim: Any, siteid: str) -> int:
    """Runs in the simulator's process: how many work orders it holds for ``siteid``."""
    return sum(1 for site, _ in sim.work_orders if site == siteid)


def child_pid(sim: Any) -> int:
    return os.getpid()


def test_maximo_in_its_own_process_serves_tls_and_answers_calls(tmp_path: Path) -> None:
    ca = CertAuthority(str(tmp_path / "ca"))
    with SimulatorProcess(maximo_over_tls, ca.issue("maximo"), apikey_cookie_quirk=False) as maximo:
        assert maximo.call(child_pid) == maximo.pid != os.getpid()
        maximo.call("populate", 3, sites=["MUTTOM"], attachments=1, attachment_size=100)
        assert maximo.call(work_order_count, "MUTTOM") == 3
        maximo.call("reset_counts")
        response = requests.get(f"{maximo.info['url']}/maximo/api/os/mxapiwodetail", params={"lean": "1"},
                                headers={"apikey": DEFAULT_API_KEYS[0]}, verify=ca.ca_path, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["member"]) == 3
        assert maximo.call(request_count) == 1
        with pytest.raises(SimulatorError, match="no_such_method"):
            maximo.call("no_such_method")
        assert maximo.call(request_count) == 1  # a failed call leaves the process serving
        pid = maximo.pid
    assert not maximo.alive()
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped


def test_graph_in_its_own_process_reports_where_msal_and_graph_are(tmp_path: Path) -> None:
    ca = CertAuthority(str(tmp_path / "ca"))
    cert = ca.issue("graph", hosts=("127.0.0.1", "localhost"))
    with SimulatorProcess(graph_over_tls, cert, client_secret="s3cret-for-tests") as graph:
        info = graph.info
        assert info["graph_url"] == info["url"] + "/v1.0"
        assert info["client_secret"] == "s3cret-for-tests"
        token = requests.post(f"{info['authority_host']}/{info['tenant_id']}/oauth2/v2.0/token", verify=ca.ca_path,
                              data={"grant_type": "client_credentials", "client_id": info["client_id"],
                                    "client_secret": "s3cret-for-tests",
                                    "scope": "https://graph.microsoft.com/.default"}, timeout=10)
        assert token.status_code == 200, token.text
        assert graph.call("count", "token") == 1


def failing_serve() -> Any:
    raise RuntimeError("no port for this simulator")


def test_a_simulator_that_cannot_start_raises_with_its_reason() -> None:
    with pytest.raises(SimulatorError, match="no port for this simulator"):
        SimulatorProcess(failing_serve)
