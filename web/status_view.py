"""The status page's HTML: pure functions from what the page shows to a string (web/status_page.py serves it).

Server-rendered, no script: filters are a plain GET form, the retry of a dead letter a plain POST
form carrying the session's CSRF token. Every value from the state (filenames, reasons, scopes,
department terms) is escaped with ``html.escape``; the page is UTF-8 with ``lang=en`` and each
filename cell carries the document's language (``lang=ml`` for Malayalam) so the browser picks a
Malayalam font from the stack in ``FONT_STACK``. The one style sheet is inline and allowed by its
hash in the page's Content-Security-Policy (``content_security_policy``), so nothing is loaded
from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from base.recent import DECISIONS, KINDS, RecentDocument, RecentFilter, extraction_text
from base.state import DeadLetter
from connectors.status_report import health_text, scope_names
from utils.tables import format_duration, format_time

#: Fonts tried in order: Latin first, then Malayalam faces (Debian: fonts-noto-core, fonts-smc-*).
FONT_STACK = ('system-ui, "Noto Sans", "DejaVu Sans", "Noto Sans Malayalam", "Manjari", "Rachana", "Meera", '
              "sans-serif")

STYLE = f"""
body {{ font-family: {FONT_STACK}; margin: 1.5rem; color: #1b1f24; background: #fafbfc; }}
h1 {{ font-size: 1.4rem; margin: 0 0 .25rem; }}
h2 {{ font-size: 1.1rem; margin: 1.75rem 0 .5rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; background: #fff; }}
th, td {{ border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f0f3f6; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.muted {{ color: #57606a; }}
.notice {{ background: #dafbe1; border: 1px solid #4ac26b; padding: .5rem .75rem; }}
.notice.bad {{ background: #ffebe9; border-color: #ff8182; }}
.state-ok {{ color: #1a7f37; font-weight: 600; }}
.state-bad {{ color: #cf222e; font-weight: 600; }}
form.filters {{ display: flex; gap: .75rem; flex-wrap: wrap; align-items: end; margin-bottom: .5rem; }}
form.filters label {{ display: flex; flex-direction: column; font-size: .85rem; }}
form.inline {{ display: inline; }}
header {{ display: flex; justify-content: space-between; align-items: baseline; }}
.error {{ white-space: pre-wrap; overflow-wrap: anywhere; min-width: 12rem; }}
td.scope {{ max-width: 16rem; overflow-wrap: anywhere; font-size: .8rem; }}
td.filename {{ min-width: 12rem; font-weight: 600; }}
td.why {{ min-width: 12rem; }}
.terms {{ display: block; color: #57606a; font-size: .8rem; }}
code, .small {{ font-size: .8rem; }}
"""

#: States shown in green; any other (auth_failed, error, ...) in red.
_GOOD_STATES = frozenset({"ok", "running", "partial", "locked", ""})


def content_security_policy() -> str:
    """The page's CSP: nothing from anywhere, but its own inline style sheet (by hash) and forms to itself."""
    digest = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
    return f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; frame-ancestors 'none'"


@dataclass
class Watcher:
    """A push watcher's row (``watcher:{name}``): its name, state, since when, its last event."""

    name: str
    state: str = ""
    since: str = ""
    last_event: str = ""


@dataclass
class Subscription:
    """A Graph change-notification subscription's row (``subscription:{drive}``)."""

    drive: str
    id: str = ""
    expires: str = ""


@dataclass
class PageData:
    """Everything one rendering of the page shows.

    status: ``connectors.status_report.status_data``'s dict. recent: the recent documents after
    ``where``. dead_letters: every dead-letter entry. watchers / subscriptions: what Redis holds of
    them (empty lists when none). csrf: the session's CSRF token ("" for a bearer request: no forms).
    notices: (text, ok) lines from the last action.
    """

    status: Mapping[str, Any]
    recent: Sequence[RecentDocument]
    where: RecentFilter
    limit: int
    dead_letters: Sequence[DeadLetter]
    watchers: Sequence[Watcher] = field(default_factory=list)
    subscriptions: Sequence[Subscription] = field(default_factory=list)
    csrf: str = ""
    notices: Sequence[tuple[str, bool]] = field(default_factory=list)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _lang(language: str) -> str:
    """A BCP 47 tag for a detected language (``mixed`` and ``unknown`` have none: the page's own)."""
    return language if language in ("ml", "en", "hi", "ta") else ""


def _filename_cell(name: str, language: str) -> str:
    lang = _lang(language)
    # Malayalam filenames may be in a document of another language: the script decides the font, so
    # a Malayalam-script name is tagged ml whatever the document's language.
    if not lang and any("\u0d00" <= ch <= "\u0d7f" for ch in name):
        lang = "ml"
    attribute = f' lang="{lang}"' if lang else ""
    return f'<td class="filename"{attribute} dir="auto">{_e(name)}</td>'


def _scope_cell(name: str, scope: str) -> str:
    """A scope's cell: the name a person reads (a SharePoint library as "site / library"), its id in the
    title when the two differ (what ``--scope`` and /metrics also take)."""
    title = f' title="{_e(scope)}"' if scope != name else ""
    return f'<td class="scope"{title}>{_e(name)}</td>'


def _state(state: str) -> str:
    css = "state-ok" if state in _GOOD_STATES else "state-bad"
    return f'<span class="{css}">{_e(state or "-")}</span>'


def _table(headers: Sequence[str], rows: Sequence[str], *, empty: str, table_id: str = "") -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    attribute = f' id="{_e(table_id)}"' if table_id else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_header(data: PageData) -> str:
    generated = format_time(data.status.get("generated_at"))
    logout = (f'<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf_token" '
              f'value="{_e(data.csrf)}"><button>Log out</button></form>' if data.csrf else "")
    notices = "".join(f'<p class="notice{"" if ok else " bad"}" role="status">{_e(text)}</p>'
                      for text, ok in data.notices)
    return (f'<header><div><h1>KMRL Connectors: status</h1><p class="muted">As of {_e(generated)} · '
            f'<a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p></div>{logout}</header>{notices}')


def render_sources(data: PageData) -> str:
    """Per source: health, dead letters, held, today's totals; per scope: state, last success, lag, last run."""
    rows = []
    for source in data.status.get("sources", []):
        scopes = source.get("scopes") or [{}]
        today = source.get("today", {}).get("counts", {})
        today_text = " · ".join(f"{kind} {today.get(kind, 0)}" for kind in KINDS if today.get(kind))
        for index, scope in enumerate(scopes):
            counts = scope.get("counts", {})
            last_run = ", ".join(f"{k} {counts[k]}" for k in ("fetched", "new", "duplicate", "skipped", "failed",
                                                               "deleted") if counts.get(k))
            lead = ""
            if index == 0:
                span = f' rowspan="{len(scopes)}"' if len(scopes) > 1 else ""
                lead = (f'<th scope="row"{span}>{_e(source["source"])}<br><span class="muted">'
                        f'{_e(health_text(source))} · dead letters {_e(source.get("dead_letters", 0))}'
                        f' · held {_e(source.get("held", 0))}</span></th>'
                        f'<td{span}>{_e(today_text or "nothing yet")}</td>')
            if not scope:
                rows.append(f'<tr>{lead}<td colspan="6" class="muted">no run recorded yet</td></tr>')
                continue
            rows.append(
                f"<tr>{lead}{_scope_cell(scope.get('scope_name') or scope['scope'], scope['scope'])}"
                f"<td>{_state(scope.get('state', ''))}</td>"
                f"<td>{_e(format_time(scope.get('last_success')))}</td>"
                f'<td class="num">{_e(format_duration(scope.get("lag_seconds")))}</td>'
                f"<td>{_e(last_run or '-')}</td><td class=\"error\">{_e(scope.get('last_error') or '')}</td></tr>")
    day = data.status.get("day", "")
    table = _table(("Source", f"Today ({day}, IST)", "Scope", "State", "Last success", "Lag", "Last run",
                    "Last error"), rows, empty="No source is configured and no run has been recorded yet.",
                   table_id="sources")
    return f'<section aria-labelledby="h-sources"><h2 id="h-sources">Sources and scopes</h2>{table}</section>'


def _options(values: Sequence[str], chosen: str, *, any_label: str) -> str:
    options = [f'<option value="">{_e(any_label)}</option>']
    for value in values:
        selected = " selected" if value == chosen else ""
        options.append(f'<option value="{_e(value)}"{selected}>{_e(value)}</option>')
    return "".join(options)


#: Department terms shown in a row (all of them are in the cell's title).
TERMS_SHOWN = 4


def _department_cell(entry: RecentDocument) -> str:
    """The department, its confidence, and the first ``TERMS_SHOWN`` terms that decided it."""
    if not entry.department:
        return '<td class="why muted">-</td>'
    confidence = f" ({entry.department_confidence:.2f})" if entry.department_confidence else ""
    terms = entry.department_terms
    shown = ", ".join(terms[:TERMS_SHOWN]) + (f" +{len(terms) - TERMS_SHOWN} more" if len(terms) > TERMS_SHOWN else "")
    why = f'<span class="terms">{_e(shown)}</span>' if terms else ""
    return f'<td class="why" title="{_e(", ".join(terms))}">{_e(entry.department)}{_e(confidence)}{why}</td>'


def _reason(reason: str) -> str:
    return f'<br><span class="muted error">{_e(reason)}</span>' if reason else ""


def render_recent(data: PageData) -> str:
    sources = [s["source"] for s in data.status.get("sources", [])]
    names = scope_names(data.status)
    where = data.where
    form = (
        '<form class="filters" method="get" action="/">'
        f'<label>Source <select name="source">{_options(sources, where.source, any_label="any")}</select></label>'
        f'<label>Language <input name="language" value="{_e(where.language)}" size="8" placeholder="ml, en"></label>'
        f'<label>Department <input name="department" value="{_e(where.department)}" size="14"></label>'
        f'<label>Decision <select name="decision">{_options(DECISIONS, where.decision, any_label="any")}</select>'
        f'</label><label>Show <input name="limit" type="number" min="1" max="1000" value="{data.limit}"></label>'
        '<button>Filter</button> <a href="/">clear</a></form>')
    rows = [
        f'<tr><td class="small">{_e(format_time(e.at))}</td><td>{_e(e.source)}</td>'
        f'{_scope_cell(names.get((e.source, e.scope), e.scope), e.scope)}'
        f"{_filename_cell(e.filename or e.source_id, e.language)}<td>{_e(e.language or '-')}</td>"
        f"{_department_cell(e)}<td>{_e(extraction_text(e.extraction))}</td>"
        f'<td>{_e(e.decision)}{_reason(e.reason)}</td><td class="small">{_e(e.hub_id or "-")}</td></tr>'
        for e in data.recent]
    table = _table(("Time (IST)", "Source", "Scope", "Filename", "Language", "Department (why)", "Extraction",
                    "Decision", "Hub id"), rows, empty="No recent documents (none recorded yet, or none match).",
                   table_id="recent")
    return f'<section aria-labelledby="h-recent"><h2 id="h-recent">Recent documents</h2>{form}{table}</section>'


def render_dead_letters(data: PageData) -> str:
    names = scope_names(data.status)
    rows = []
    for entry in data.dead_letters:
        retry = (f'<form class="inline" method="post" action="/deadletters/{quote(entry.id, safe="")}/retry">'
                 f'<input type="hidden" name="csrf_token" value="{_e(data.csrf)}">'
                 f'<button name="retry" value="{_e(entry.id)}">Retry</button></form>' if data.csrf else "")
        kept = "kept" if entry.bytes_path else "not kept (a full sync reads it again)"
        rows.append(
            f'<tr id="dl-{_e(entry.id)}"><td><code>{_e(entry.id)}</code></td><td>{_e(entry.connector)}</td>'
            f'{_scope_cell(names.get((entry.connector, entry.scope), entry.scope), entry.scope)}'
            f'{_filename_cell(entry.display_name or entry.source_id, "")}'
            f'<td class="num">{_e(entry.attempts)}</td><td>{_e(format_time(entry.last_failed_at))}</td>'
            f'<td class="error">{_e(entry.reason)}</td><td>{_e(kept)}</td><td>{retry}</td></tr>')
    table = _table(("Id", "Source", "Scope", "Filename", "Tries", "Last failed", "Reason", "Bytes", ""), rows,
                   empty="No dead letters.", table_id="deadletters")
    return (f'<section aria-labelledby="h-dead"><h2 id="h-dead">Dead letters ({len(data.dead_letters)})</h2>'
            f"{table}</section>")


def render_watchers(data: PageData) -> str:
    """Push watchers and Graph subscriptions, from what Redis holds of them (nothing yet: a line says so)."""
    watchers = _table(("Watcher", "State", "Since", "Last event"), [
        f"<tr><td>{_e(w.name)}</td><td>{_state(w.state)}</td><td>{_e(w.since or '-')}</td>"
        f"<td>{_e(w.last_event or '-')}</td></tr>" for w in data.watchers],
        empty="No watcher has reported (push watchers are not running).", table_id="watchers")
    subscriptions = _table(("Drive", "Subscription id", "Expires"), [
        f"<tr><td>{_e(s.drive)}</td><td>{_e(s.id or '-')}</td><td>{_e(s.expires or '-')}</td></tr>"
        for s in data.subscriptions], empty="No Graph change-notification subscription.", table_id="subscriptions")
    return (f'<section aria-labelledby="h-push"><h2 id="h-push">Watchers and subscriptions</h2>{watchers}'
            f"<h3>Graph subscriptions</h3>{subscriptions}</section>")


def render_page(data: PageData) -> str:
    """The whole page (UTF-8 HTML)."""
    body = (render_header(data) + render_sources(data) + render_recent(data) + render_dead_letters(data)
            + render_watchers(data))
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>KMRL Connectors: status</title><style>{STYLE}</style></head><body>{body}</body></html>")
