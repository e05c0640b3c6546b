"""Watchers: processes that notice changes at a source as they happen and ask for that scope's sync.

A watcher only *asks* (``scheduler.request_sync``, under the one trigger rule); the pipeline stays
the one place where documents move, and the beat tick stays as the safety net for whatever a
watcher missed (DESIGN.md "Push").

    python -m watchers            (or: kmrl-connectors watch)
"""
