"""The files a detached Celery process writes, made ready before it detaches.

``celery worker|beat --detach --pidfile=var/worker.pid --logfile=logs/worker.log`` forks and exits 0
at once; a folder of its pid or log file that does not exist makes the detached child die unseen, so
the command reported success having started nothing. ``prepare_detached_files`` runs in the process
that was started, before it detaches: it creates those folders, or says in one line why it cannot
(exit code 2), and warns when a detached process would log nowhere (no ``--logfile`` and LOG_FILE
empty: its stderr goes to /dev/null).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


class DetachedFilesUnusable(Exception):
    """A folder for a detached process's pid or log file cannot be created (the message says which)."""


def prepare_detached_files(params: Mapping[str, Any], *, log_file: str) -> str:
    """Creates the folders of ``params``' ``pidfile`` and ``logfile`` (Celery's command options) when
    ``params['detach']`` is set; returns a warning for the operator ("" when none). Raises
    ``DetachedFilesUnusable`` naming the option and the folder when one cannot be created.
    ``log_file`` is LOG_FILE's value (the service's JSON log, which a detached process also writes)."""
    if not params.get("detach"):
        return ""
    for option in ("pidfile", "logfile"):
        path = params.get(option)
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(str(path)))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise DetachedFilesUnusable(f"--{option}={path}: cannot create the folder {folder} "
                                        f"({exc.strerror}); nothing was started") from None
        if not os.access(folder, os.W_OK):
            raise DetachedFilesUnusable(f"--{option}={path}: the folder {folder} is not writable; nothing was started")
    if not params.get("logfile") and not log_file:
        return ("detached with no --logfile and LOG_FILE empty: this process's logs go nowhere "
                "(give --logfile=logs/NAME.log)")
    return ""
