"""A sync run in its own process, for crash tests: ``python -m tests.crash_child STATE_URL HUB_URL TOKEN ROOT N``.

With ``KILL_AT=k`` in the environment the process SIGKILLs itself at the k-th state update after a
Hub acknowledgement, i.e. between the Hub's answer and the pipeline recording it: the worst moment.
With ``OUTBOX=1`` documents go to the local outbox (batched acknowledgements) instead, and
``KILL_AT=k`` kills the process right after the k-th outbox write, before its batch is flushed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from base.hub_client import HttpHub, OutboxHub
from base.state import StateStore
from tests.conftest import make_settings
from tests.helpers import ListConnector, fake_files


def main() -> None:
    state_url, hub_url, token, root, count = sys.argv[1:6]
    state = StateStore.from_url(state_url)
    kill_at = int(os.environ.get("KILL_AT", "0"))
    real = state.record_ingested
    if kill_at:
        calls = {"n": 0}

        def record_then_maybe_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        state.record_ingested = record_then_maybe_die  # type: ignore[method-assign]
    # A two-second lease: the next run takes over from a killed one quickly.
    settings = make_settings(Path(root), state_url, cursor_save_every=int(os.environ.get("SAVE_EVERY", "50")),
                             lock_ttl=2.0, ack_batch_size=8)
    if os.environ.get("OUTBOX") == "1":
        outbox = OutboxHub(settings.hub_outbox_dir, group_commit=True)
        if kill_at:
            state.record_ingested = real  # type: ignore[method-assign]
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
        hub = HttpHub(hub_url, token)
    connector = ListConnector({"inbox": fake_files(int(count), "crash")}, settings=settings, state=state, hub=hub)
    summary = connector.sync_documents({})
    print(summary.state, summary.totals["new"], flush=True)


if __name__ == "__main__":
    main()
