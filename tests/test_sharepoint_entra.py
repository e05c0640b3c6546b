"""utils.entra: client-credential tokens through msal against the Entra simulator over TLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.graph import GraphSimulator
from sandbox.servers import free_port
from sandbox.tls import CertAuthority
from utils.entra import EntraAuth, describe_aad_error, reset_applications
from utils.errors import AuthError, ConfigError, TransientError


@pytest.fixture(autouse=True)
def _fresh_applications() -> Iterator[None]:
    reset_applications()
    yield
    reset_applications()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("entra-ca")))


@pytest.fixture
def sim(ca: CertAuthority) -> Iterator[GraphSimulator]:
    simulator = GraphSimulator(client_secret="entra-secret-for-tests")
    simulator.start(ca)
    yield simulator
    simulator.stop()


def _auth(sim: GraphSimulator, ca: CertAuthority, **overrides: str) -> EntraAuth:
    values = {"tenant_id": sim.tenant_id, "client_id": sim.client_id, "client_secret": sim.client_secret}
    values.update(overrides)
    return EntraAuth(**values, authority=sim.authority_host, ca_file=ca.ca_path)


def test_token_comes_from_entra_once_then_from_msal_cache(sim: GraphSimulator, ca: CertAuthority) -> None:
    first = _auth(sim, ca).token()
    second = _auth(sim, ca).token()  # another connector in the same process
    assert first[1] == "identity_provider" and second == (first[0], "cache")
    assert (sim.count("discovery"), sim.count("token")) == (1, 1)


def test_refresh_drops_the_cached_token(sim: GraphSimulator, ca: CertAuthority) -> None:
    auth = _auth(sim, ca)
    old, _ = auth.token()
    new, source = auth.token(refresh=True)
    assert new != old and source == "identity_provider"


def test_a_rotated_secret_gets_its_own_application(sim: GraphSimulator, ca: CertAuthority) -> None:
    _auth(sim, ca).token()
    sim.add_app(sim.client_id, "rotated-secret-value", tenant_id=sim.tenant_id)
    token, source = _auth(sim, ca, client_secret="rotated-secret-value").token()
    assert source == "identity_provider" and token


def test_ca_bundle_in_the_environment_does_not_override_the_configured_ca(
        sim: GraphSimulator, ca: CertAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert _auth(sim, ca).token()[0]


def test_wrong_secret_is_an_auth_error_naming_the_code_not_the_secret(sim: GraphSimulator,
                                                                       ca: CertAuthority) -> None:
    with pytest.raises(AuthError) as caught:
        _auth(sim, ca, client_secret="definitely-wrong").token()
    assert "AADSTS7000215 (invalid client secret)" in str(caught.value)
    assert "definitely-wrong" not in str(caught.value)


def test_unknown_tenant_is_an_auth_error_from_discovery(sim: GraphSimulator, ca: CertAuthority) -> None:
    with pytest.raises(AuthError, match="AADSTS90002"):
        _auth(sim, ca, tenant_id="no-such-tenant").token()


def test_invalid_scope_is_a_config_error(sim: GraphSimulator, ca: CertAuthority) -> None:
    auth = EntraAuth(tenant_id=sim.tenant_id, client_id=sim.client_id, client_secret=sim.client_secret,
                     authority=sim.authority_host, ca_file=ca.ca_path, scope="https://graph.microsoft.com/Files.Read")
    with pytest.raises(ConfigError, match="AADSTS1002012") as caught:
        auth.token()
    assert not isinstance(caught.value, AuthError)


def test_unreachable_authority_is_transient(ca: CertAuthority) -> None:
    auth = EntraAuth(tenant_id="t", client_id="c", client_secret="s3cr3t-value",
                     authority=f"https://127.0.0.1:{free_port()}", ca_file=ca.ca_path, timeout=(1.0, 1.0))
    with pytest.raises(TransientError):
        auth.token()


def test_entra_5xx_on_the_token_request_is_transient(sim: GraphSimulator, ca: CertAuthority) -> None:
    sim.inject("token", 503, retry_after=1)
    with pytest.raises(TransientError):
        _auth(sim, ca).token()


def test_missing_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="client_secret"):
        EntraAuth(tenant_id="t", client_id="c", client_secret="")


def test_description_keeps_the_code_and_first_sentence_only() -> None:
    text = ("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent is the value. "
            "Trace ID: 1 Correlation ID: 2 Timestamp: 2024-01-01 00:00:00Z")
    assert describe_aad_error(text) == "AADSTS7000215 (invalid client secret): Invalid client secret provided."
    assert describe_aad_error("no code here") == "no code here"


def test_token_answer_with_neither_token_nor_error_is_transient(sim: GraphSimulator, ca: CertAuthority) -> None:
    sim.inject("token", 200, body={"token_type": "Bearer", "expires_in": 3599})
    with pytest.raises(TransientError, match="neither an access_token nor an error"):
        _auth(sim, ca).token()
