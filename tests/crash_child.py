"""A sync run in its own process, for crash tests: ``python -m tests.crash_child STATE_URL HUB_URL TOKEN ROOT N``.

With ``KILL_AT=k`` in the environment the process SIGKILLs itself as the Hub acknowledges its k-th
upload, before the pipeline records it (with ``ACK_BATCH_SIZE=8`` and four uploads in flight, up to
a whole batch is then acknowledged by the Hub and unknown to the state): the worst moment.
With ``OUTBOX=1`` documents go to the local outbox (batched acknowledgements) instead, and
``KILL_AT=k`` kills the process right after the k-th outbox write, before its batch is flushed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from base.hub_client import HttpHub, OutboxHub
from base.state import StateStore
from tests.conftest import make_settings
from tests.helpers import ListConnector, fake_files


def main() -> None:
    state_url, hub_url, token, root, count = sys.argv[1:6]
    state = StateStore.from_url(state_url)
    kill_at = int(os.environ.get("KILL_AT", "0"))
    # A two-second lease: the next run takes over from a killed one quickly.
    settings = make_settings(Path(root), state_url, cursor_save_every=int(os.environ.get("SAVE_EVERY", "50")),
                             lock_ttl=2.0, ack_batch_size=8)
    if os.environ.get("OUTBOX") == "1":
        outbox = OutboxHub(settings.hub_outbox_dir, group_commit=True)
        if kill_at:
            writes = {"n": 0}
            real_write = outbox._write

            def write_then_maybe_die(document):  # type: ignore[no-untyped-def]
                result = real_write(document)
                writes["n"] += 1
                if writes["n"] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            outbox._write = write_then_maybe_die  # type: ignore[method-assign]
        hub: HttpHub | OutboxHub = outbox
    else:
        # Four uploads in flight, as HUB_UPLOADS_IN_FLIGHT's default: the kill strikes while others
        # may be on their way too.
        hub = HttpHub(hub_url, token, uploads_in_flight=4)
        if kill_at:
            acks = {"n": 0}
            lock = threading.Lock()
            real_upload = hub.upload

            def upload_then_maybe_die(document):  # type: ignore[no-untyped-def]
                # Between the Hub's acknowledgement and any state update of this document.
                hub_id = real_upload(document)
                with lock:
                    acks["n"] += 1
                    if acks["n"] == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                return hub_id

            hub.upload = upload_then_maybe_die  # type: ignore[method-assign]
    connector = ListConnector({"inbox": fake_files(int(count), "crash")}, settings=settings, state=state, hub=hub)
    summary = connector.sync_documents({})
    print(summary.state, summary.totals["new"], flush=True)


if __name__ == "__main__":
    main()
