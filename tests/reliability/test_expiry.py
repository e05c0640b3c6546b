"""Credentials and download URLs expiring in the middle of a run: the Graph access token revoked,
SharePoint download URLs expired, WhatsApp media URLs issued already expired, the Maximo login session
ended. Each connector renews what expired and the same run goes on to the end: every document stored
once, nothing dead-lettered, and the renewal cost one extra request, not a restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.hub import RunningHub
from sandbox.maximo import DEFAULT_USERS
from sandbox.tls import CertAuthority
from tests.reliability.beds import maximo_bed, service_env, sharepoint_bed, whatsapp_bed
from tests.reliability.checks import assert_delivered_once, assert_settled
from tests.reliability.conftest import FAULT_DOCUMENTS, FULL
from tests.reliability.inprocess import AfterUploads, connector_for

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900 if FULL else 300)]

#: Upload counts after which the credential or URL expires again (three times in one run).
EXPIRE_AT = (FAULT_DOCUMENTS // 4, FAULT_DOCUMENTS // 2, 3 * FAULT_DOCUMENTS // 4)
#: Small batches: the pipeline reads up to two batches ahead of its uploads, and each expiry (struck at an
#: upload) must still have reads of the source after it, or there would be nothing to renew.
SMALL_BATCHES = {"ACK_BATCH_SIZE": "4"}


def test_graph_token_revoked_mid_run_is_acquired_again_and_the_run_goes_on(
        tmp_path: Path, state_url: str, rel_hub: RunningHub, ca: CertAuthority) -> None:
    # Pages of 10: Graph (not just the pre-authenticated download URLs) is called after each revocation.
    with sharepoint_bed(ca, FAULT_DOCUMENTS, delta_page_size=10) as bed:
        graph = bed.sims["graph"]
        env = {**service_env(tmp_path, state_url, rel_hub), **bed.env, **SMALL_BATCHES}
        connector = connector_for("sharepoint", env)
        connector.hub = trigger = AfterUploads(connector.hub, EXPIRE_AT, graph.revoke_tokens)
        summary = connector.sync_documents()
        assert summary.state == "ok" and trigger.fired == len(EXPIRE_AT), summary.as_dict()
        assert graph.count("token") == 1 + len(EXPIRE_AT)  # one fresh token per revocation, no more
        refused = [r for r in graph.log if r.status == 401]
        assert len(refused) == len(EXPIRE_AT)  # each revocation cost exactly one refused request
    assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context="Graph token revoked mid-run")
    assert_settled(state_url, "sharepoint")


def test_sharepoint_download_urls_expiring_mid_run_are_refreshed_from_the_item(
        tmp_path: Path, state_url: str, rel_hub: RunningHub, ca: CertAuthority) -> None:
    with sharepoint_bed(ca, FAULT_DOCUMENTS) as bed:
        graph = bed.sims["graph"]
        env = {**service_env(tmp_path, state_url, rel_hub), **bed.env, **SMALL_BATCHES}
        connector = connector_for("sharepoint", env)
        connector.hub = trigger = AfterUploads(connector.hub, EXPIRE_AT, graph.expire_download_urls)
        summary = connector.sync_documents()
        assert summary.state == "ok" and trigger.fired == len(EXPIRE_AT), summary.as_dict()
        expired = [r for r in graph.log if r.kind == "download" and r.status == 401]
        assert expired, "no download URL had expired: the test proved nothing"
        assert graph.count("item") == len(expired)  # one item re-read per expired URL
    assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context="download URLs expired mid-run")
    assert_settled(state_url, "sharepoint")


def test_whatsapp_media_url_expired_between_the_two_steps_is_resolved_again(
        tmp_path: Path, state_url: str, rel_hub: RunningHub) -> None:
    with whatsapp_bed(tmp_path, state_url, FAULT_DOCUMENTS) as bed:
        cloud = bed.sims["whatsapp"]
        connector = connector_for("whatsapp", {**service_env(tmp_path, state_url, rel_hub), **bed.env, **SMALL_BATCHES})
        # The next URL the media endpoint hands out is already past its five minutes.
        connector.hub = trigger = AfterUploads(connector.hub, EXPIRE_AT, lambda: cloud.expire_next_urls(1))
        summary = connector.sync_documents()
        assert summary.state == "ok" and trigger.fired == len(EXPIRE_AT), summary.as_dict()
        assert cloud.counts["media"] == FAULT_DOCUMENTS + len(EXPIRE_AT)  # one re-resolve per expired URL
        assert cloud.counts["download"] == FAULT_DOCUMENTS + len(EXPIRE_AT)
    assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context="WhatsApp media URLs expired")
    assert_settled(state_url, "whatsapp")


def test_maximo_session_ended_mid_run_is_renewed_with_one_login(
        tmp_path: Path, state_url: str, rel_hub: RunningHub) -> None:
    user, password = next(iter(DEFAULT_USERS.items()))
    with maximo_bed(FAULT_DOCUMENTS) as bed:
        maximo = bed.sims["maximo"]
        env = {**service_env(tmp_path, state_url, rel_hub), **bed.env, **SMALL_BATCHES, "MAXIMO_AUTH": "maxauth",
               "MAXIMO_USER": user, "MAXIMO_PASSWORD": password}
        env.pop("MAXIMO_API_KEY")
        connector = connector_for("maximo", env)
        connector.hub = trigger = AfterUploads(connector.hub, EXPIRE_AT, maximo.expire_sessions)
        summary = connector.sync_documents()
        assert summary.state == "ok" and trigger.fired == len(EXPIRE_AT), summary.as_dict()
        assert maximo.logins == 1 + len(EXPIRE_AT)
    assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context="Maximo session ended mid-run")
    assert_settled(state_url, "maximo")
