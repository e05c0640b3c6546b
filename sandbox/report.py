"""What a round of the service did, read from where the service itself records it.

- ``runs_since``: every scope run that ended after a time, from the run history the pipeline
  keeps in Redis (``history:{connector}:{scope}``); ``totals_by_source`` adds them up per source.
  Summing runs (not reading the last status) stays right when beat ticks a scope twice in a round.
- ``wait_for_round``: polls until every expected item of each source is accounted for by a run
  (ingested, linked as a duplicate, skipped, failed or deleted) and no scope is running.
- ``hub_breakdown``: the Hub simulator's documents and provenance links by source, language and
  department (the enrichment the pipeline sent as metadata).
- ``summary_tables``: the demo's tables.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from base.contract import ScopeState
from base.runner import COUNT_FIELDS
from base.state import StateStore
from sandbox.hub import HubSimulator
from utils.tables import render_table

#: Outcomes that settle an item: a round is over when these add up to what was seeded.
SETTLED = ("new", "duplicate", "skipped", "failed", "deleted", "held", "renamed")
LANGUAGES = ("en", "ml", "mixed")
DEPARTMENTS = ("Engineering", "Finance", "Safety", "HR", "Operations", "Executive")


def runs_since(state: StateStore, since: float) -> list[dict[str, Any]]:
    """Run summaries (connector, scope, state, counts, started_at, ended_at, ...) of runs that ended at or
    after ``since``: a run already under way when new items arrive (beat's own tick) counts with them."""
    runs: list[dict[str, Any]] = []
    for run in state.iter_history():
        if float(run.get("ended_at") or 0) >= since:
            runs.append(run)
    return runs


def totals_by_source(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per source: the sum of every count field, plus ``runs`` and ``scopes`` (distinct scopes run)."""
    totals: dict[str, dict[str, int]] = {}
    scopes: dict[str, set[str]] = {}
    for run in runs:
        source = str(run.get("connector"))
        entry = totals.setdefault(source, {**dict.fromkeys(COUNT_FIELDS, 0), "runs": 0, "scopes": 0})
        for name in COUNT_FIELDS:
            entry[name] += int((run.get("counts") or {}).get(name, 0))
        entry["runs"] += 1
        scopes.setdefault(source, set()).add(str(run.get("scope")))
        entry["scopes"] = len(scopes[source])
    return totals


def settled(totals: Mapping[str, int]) -> int:
    """Items a source's runs settled one way or another."""
    return sum(int(totals.get(name, 0)) for name in SETTLED)


def running_scopes(state: StateStore) -> list[str]:
    """``connector/scope`` of every scope whose status says a run is in progress."""
    return [f"{c}/{s}" for c, s, status in state.iter_statuses() if status.get("state") == ScopeState.RUNNING]


def wait_for_round(state: StateStore, since: float, expected: Mapping[str, int], *, timeout: float,
                   check: Callable[[], str | None] | None = None, poll: float = 0.25) -> float:
    """Waits until each source in ``expected`` has settled that many items in runs ended since ``since``
    and no scope is running; returns the seconds waited.

    check: called every poll; a returned text (a service process died...) ends the wait with RuntimeError.
    Raises TimeoutError saying what is still missing.
    """
    started = time.monotonic()
    while True:
        problem = check() if check is not None else None
        if problem:
            raise RuntimeError(problem)
        totals = totals_by_source(runs_since(state, since))
        missing = {s: n - settled(totals.get(s, {})) for s, n in expected.items() if settled(totals.get(s, {})) < n}
        running = running_scopes(state)
        if not missing and not running:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"after {timeout:.0f} s: items not yet settled {missing or 'none'}; "
                               f"scopes still running {running or 'none'}")
        time.sleep(poll)


def hub_breakdown(hub: HubSimulator) -> dict[str, dict[str, Counter[str]]]:
    """Per source, how many documents the Hub holds from it by ``language`` and by ``department``
    (uploads and provenance links both count: each is one source item that landed)."""
    state = hub.state()
    result: dict[str, dict[str, Counter[str]]] = {}

    def add(metadata: Mapping[str, Any]) -> None:
        entry = result.setdefault(str(metadata.get("source")), {"language": Counter(), "department": Counter()})
        entry["language"][str(metadata.get("language") or "unknown")] += 1
        entry["department"][str(metadata.get("department") or "none")] += 1

    for doc in state["documents"].values():
        add(doc["metadata"])
    for link in state["provenance"]:
        if link.get("status") in (200, 201):
            add(link.get("metadata") or {})
    return result


def summary_tables(sources: Sequence[str], totals: Mapping[str, Mapping[str, int]],
                   breakdown: Mapping[str, Mapping[str, Counter[str]]], skipped: Mapping[str, str]) -> str:
    """The demo's three tables: counts, languages and departments per source (skipped sources say why)."""
    rows: list[list[object]] = []
    for source in sources:
        if source in skipped:
            rows.append([source, "-", "-", "-", "-", "-", "-", f"skipped: {skipped[source]}"])
            continue
        t = totals.get(source, {})
        rows.append([source, t.get("scopes", 0), t.get("fetched", 0), t.get("new", 0), t.get("duplicate", 0),
                     t.get("failed", 0), t.get("deleted", 0), ""])
    active = [s for s in sources if s not in skipped]
    sum_row: list[object] = ["total", sum(totals.get(s, {}).get("scopes", 0) for s in active)]
    sum_row += [sum(totals.get(s, {}).get(k, 0) for s in active) for k in ("fetched", "new", "duplicate", "failed",
                                                                          "deleted")]
    counts = render_table(["SOURCE", "SCOPES", "FETCHED", "NEW", "DUPLICATE", "FAILED", "DELETED", "NOTE"],
                          [*rows, [*sum_row, ""]], max_width=72)

    def by(kind: str, columns: Sequence[str]) -> str:
        extra = sorted({k for s in active for k in breakdown.get(s, {}).get(kind, Counter())} - set(columns))
        headers = [*columns, *extra]
        table = [[s, *(breakdown.get(s, {}).get(kind, Counter()).get(c, 0) for c in headers)] for s in active]
        table.append(["total", *(sum(breakdown.get(s, {}).get(kind, Counter()).get(c, 0) for s in active)
                                 for c in headers)])
        return render_table([f"BY {kind.upper()}", *headers], table)

    return "\n\n".join([counts, by("language", LANGUAGES), by("department", DEPARTMENTS)])


def content_table(hub: HubSimulator, site: str) -> str:
    """One row per document the Hub holds from SharePoint site ``site`` (e.g. ``sites/records``): how
    its text was read, its language and department, and the terms that decided the department."""
    rows: list[list[object]] = []
    for doc in hub.state()["documents"].values():
        meta = doc["metadata"]
        extra = meta.get("extra") or {}
        if meta.get("source") != "sharepoint" or not str(extra.get("site", "")).rstrip("/").endswith("/" + site):
            continue
        extraction = meta.get("extraction") or {}
        read = str(extraction.get("method") or "-")
        if extraction.get("pages"):
            read += f", {extraction['pages']} p."
        language = str(meta.get("language") or "-")
        if meta.get("language_script"):
            language += f" ({meta['language_script']})"
        # "keyword:bogie" -> "bogie"; a hint keeps its name ("hint:site=finance").
        terms = [str(term).removeprefix("keyword:") for term in meta.get("department_terms") or []]
        why = ", ".join(terms[:3]) or "-"
        rows.append([meta.get("filename", "-"), read, language, meta.get("department") or "-", why])
    rows.sort(key=lambda row: str(row[0]))
    return render_table(["DOCUMENT", "TEXT READ BY", "LANGUAGE", "DEPARTMENT", "WHY"], rows, max_width=48)
