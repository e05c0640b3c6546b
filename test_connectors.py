"""The test entry point of the original design: ``python test_connectors.py`` runs the whole suite.

One smoke test per connector can also be run alone, against its local simulator (or a private
Dovecot for email), printing what it ingested::

    python -c "from test_connectors import test_email_connector; test_email_connector()"

(likewise ``test_maximo_connector``, ``test_sharepoint_connector``, ``test_whatsapp_connector``).
"""

from __future__ import annotations

import sys

from sandbox.smoke import (  # noqa: F401 - re-exported for the commands above
    test_email_connector,
    test_maximo_connector,
    test_sharepoint_connector,
    test_whatsapp_connector,
)


def main(argv: list[str] | None = None) -> int:
    """Runs pytest over tests/ (extra arguments are passed on) and returns its exit code."""
    import pytest

    return int(pytest.main(["tests", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
