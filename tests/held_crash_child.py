"""A sync run that holds a document and dies, for crash tests:
``python -m tests.held_crash_child STATE_URL ROOT TEXT``.

The fake source has one file whose text is TEXT, and a ``[[hold]]`` rule holds documents carrying an
Aadhaar number. The process SIGKILLs itself when the pipeline records the held entry, i.e. after the
held bytes were kept and before the entry and the item record exist: the worst moment.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from base.enrichment.rules import ContentRules
from base.state import StateStore
from tests.conftest import make_settings
from tests.helpers import FakeFile, ListConnector

HOLD_AADHAAR = ContentRules.from_mapping({"hold": [{"name": "aadhaar", "sensitive": ["aadhaar"]}]})


def main() -> None:
    state_url, root, text = sys.argv[1:4]
    state = StateStore.from_url(state_url)

    def die(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    state.add_held = die  # type: ignore[assignment,method-assign]
    settings = make_settings(Path(root), state_url, lock_ttl=2.0)
    connector = ListConnector({"a": [FakeFile("form-1", b"scanned form", text=text)]}, settings=settings, state=state,
                              rules=HOLD_AADHAAR)
    connector.sync_documents({})
    print("not killed", flush=True)


if __name__ == "__main__":
    main()
