"""Operator access to the internal listener: a bearer token for machines, a login cookie for people.

What a caller may rely on (the README's "The web app's two listeners" says it for operators):

- No OPERATOR_TOKEN, or one shorter than ``MIN_TOKEN_LENGTH``: every operator route answers 404, as if
  it did not exist (the reason is logged once at start-up). Open endpoints (the probes) still answer.
- An operator request carries ``Authorization: Bearer <OPERATOR_TOKEN>`` (Prometheus's
  ``authorization`` / ``bearer_token_file``), or the session cookie that ``POST /login`` sets after the
  token was typed into the login form. Tokens are compared in constant time.
- The cookie is signed (HMAC-SHA256) with a key derived from the token, so changing OPERATOR_TOKEN ends
  every session; it expires OPERATOR_SESSION_HOURS after login. It is HttpOnly and SameSite=Strict,
  and Secure when the request came over https (or always/never with OPERATOR_COOKIE_SECURE=1/0).
- A request that changes something (any method but GET, HEAD, OPTIONS) and is authenticated by the
  cookie must carry the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``) and
  an ``Origin`` (or, without one, a ``Referer``) of this very host or of OPERATOR_ALLOWED_ORIGINS;
  otherwise 403. The login form has its own CSRF token and the same Origin check. A bearer request
  needs neither: a browser never adds that header by itself.
- Anything else: 401, with ``WWW-Authenticate: Bearer``; but a GET of a page a person opens (the
  status page: ``page_endpoints``) without any credentials redirects to ``/login`` instead.

Every route registered on the internal app is an operator route unless it is named open, so a status
page or a sync trigger added later is protected without saying so.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from html import escape
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, g, redirect, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from config.settings import Settings
from utils.env import FALSE_WORDS, TRUE_WORDS
from utils.logging import get_logger, register_secret

log = get_logger(__name__)

#: Shortest OPERATOR_TOKEN accepted; a shorter one keeps the operator routes off.
MIN_TOKEN_LENGTH = 24  # characters
#: How long a login lasts by default.
DEFAULT_SESSION_HOURS = 8.0  # hours
COOKIE_NAME = "kmrl_operator"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Endpoints that do their own checks (the login form) and so pass the guard unauthenticated.
_LOGIN_ENDPOINTS = frozenset({"operator.login_form", "operator.login"})
_SESSION_KEY_LABEL = b"kmrl-operator-session-v1"


@dataclass(frozen=True)
class OperatorAccess:
    """The operator settings.

    token: OPERATOR_TOKEN (no default; empty or too short: operator routes off).
    session_hours: OPERATOR_SESSION_HOURS, how long a login lasts (default 8).
    cookie_secure: OPERATOR_COOKIE_SECURE: True/False, or None (default) for "when the request is https".
    allowed_origins: OPERATOR_ALLOWED_ORIGINS, origins besides the request's own host that may POST
        (for a proxy that rewrites Host), e.g. ``https://ops.kmrl.example``.
    """

    token: str = field(default="", repr=False)
    session_hours: float = DEFAULT_SESSION_HOURS
    cookie_secure: bool | None = None
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> OperatorAccess:
        hours = settings.reader.duration("OPERATOR_SESSION_HOURS", DEFAULT_SESSION_HOURS, unit="hours", above=0,
                                         maximum=24 * 30)
        # auto (follow the request's scheme) or a flag.
        secure_word = settings.reader.choice("OPERATOR_COOKIE_SECURE", "auto", ("auto", *TRUE_WORDS, *FALSE_WORDS))
        secure = None if secure_word == "auto" else secure_word in TRUE_WORDS
        origins = tuple(origin.rstrip("/") for origin in settings.env_list("OPERATOR_ALLOWED_ORIGINS"))
        return cls(token=settings.env("OPERATOR_TOKEN"), session_hours=hours, cookie_secure=secure,
                   allowed_origins=origins)

    @property
    def enabled(self) -> bool:
        """True when a token long enough is configured."""
        return len(self.token) >= MIN_TOKEN_LENGTH

    def token_matches(self, given: str) -> bool:
        """Constant time in the given value's content and length (both sides are hashed first)."""
        if not self.enabled:
            return False
        expected = hashlib.sha256(self.token.encode("utf-8")).digest()
        return hmac.compare_digest(expected, hashlib.sha256(given.encode("utf-8", "replace")).digest())

    def session_key(self) -> bytes:
        """The cookie-signing key: derived from the token, so a new token ends every session."""
        return hmac.new(self.token.encode("utf-8"), _SESSION_KEY_LABEL, hashlib.sha256).digest()


class _OperatorSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session with SHA-256 and a Secure flag decided per request."""

    salt = "kmrl-operator-session"
    digest_method = staticmethod(hashlib.sha256)

    def __init__(self, secure: bool | None) -> None:
        self._secure = secure

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure if self._secure is None else self._secure


def install_operator_access(app: Flask, access: OperatorAccess, *, open_endpoints: frozenset[str],
                            page_endpoints: frozenset[str] = frozenset()) -> None:
    """Guards every route of ``app`` (the internal app) but ``open_endpoints``, and adds the login routes
    (``GET/POST /login``, ``POST /logout``). A GET of one of ``page_endpoints`` without credentials
    redirects to the login form."""
    register_secret(access.token)
    if not access.enabled:
        log.warning("operator_routes_off", reason="OPERATOR_TOKEN is not set" if not access.token
                    else f"OPERATOR_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters",
                    effect="/metrics and the other operator routes answer 404; the probes still answer")
    else:
        app.secret_key = access.session_key()
    app.session_interface = _OperatorSessions(access.cookie_secure)
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_REFRESH_EACH_REQUEST=False,
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=access.session_hours))
    app.register_blueprint(_operator_blueprint(access))

    @app.before_request
    def guard() -> BaseResponse | None:
        endpoint = request.endpoint
        if endpoint in open_endpoints:
            return None
        if not access.enabled:
            abort(404)
        if endpoint is None or endpoint in _LOGIN_ENDPOINTS:
            return None  # an unknown route (Flask answers 404 or 405), or the login form
        how = _authenticate(access)
        if how is None:
            if endpoint in page_endpoints and request.method in SAFE_METHODS and "Authorization" not in request.headers:
                return redirect("/login", code=303)  # a person opening the page: the login form
            return _unauthorized()
        if request.method not in SAFE_METHODS and how == "cookie":
            problem = _csrf_problem(access, session.get("csrf"))
            if problem is not None:
                log.warning("operator_request_refused", reason=problem, method=request.method, path=request.path,
                            remote=request.remote_addr)
                return _text(f"refused: {problem}", 403)
        g.operator = how
        return None

    @app.after_request
    def hardening(response: Response) -> Response:
        # Operator pages are never framed, cached or allowed to load anything from elsewhere.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'none'; form-action 'self'; frame-ancestors 'none'")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _authenticate(access: OperatorAccess) -> str | None:
    """"bearer" or "cookie" for an operator's request, else None (a wrong bearer token is logged)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        if access.token_matches(value.strip()):
            return "bearer"
        log.warning("operator_request_refused", reason="wrong bearer token", path=request.path,
                    remote=request.remote_addr)
        return None
    return "cookie" if session.get("operator") is True else None


def _same_origin(access: OperatorAccess) -> bool:
    origin = request.headers.get("Origin", "")
    if not origin or origin == "null":
        referer = urlsplit(request.headers.get("Referer", ""))
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else ""
    if not origin:
        return False
    origin = origin.rstrip("/")
    return origin == request.host_url.rstrip("/") or origin in access.allowed_origins


def _csrf_problem(access: OperatorAccess, expected: Any, field_name: str = CSRF_FIELD) -> str | None:
    """Why this POST must be refused as a possible cross-site request, or None."""
    if not _same_origin(access):
        return "Origin is not this host"
    given = request.form.get(field_name) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(
            given.encode("utf-8", "replace"), expected.encode("utf-8")):
        return "missing or wrong CSRF token"
    return None


def _text(body: str, status: int) -> Response:
    return Response(body + "\n", status=status, mimetype="text/plain")


def _unauthorized() -> Response:
    response = _text("operator token required: send Authorization: Bearer <OPERATOR_TOKEN>, or log in at /login",
                     401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="kmrl-operator"'
    return response


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1>{body}</body></html>")
    return Response(html, status=status, mimetype="text/html")


def _login_page(message: str = "", status: int = 200) -> Response:
    if "login_csrf" not in session:
        session["login_csrf"] = secrets.token_urlsafe(32)
    note = f"<p>{escape(message)}</p>" if message else ""
    form = (f'{note}<form method=post action="/login">'
            f'<input type=hidden name=login_csrf value="{escape(session["login_csrf"])}">'
            f'<label>Operator token <input type=password name=token autocomplete=current-password required>'
            f"</label> <button>Log in</button></form>")
    return _page("KMRL Connectors: operator login", form, status)


def _operator_blueprint(access: OperatorAccess) -> Blueprint:
    bp = Blueprint("operator", __name__)

    @bp.get("/login")
    def login_form() -> Response:
        return _login_page()

    @bp.post("/login")
    def login() -> Any:
        problem = _csrf_problem(access, session.get("login_csrf"), field_name="login_csrf")
        if problem is not None:
            log.warning("operator_login_refused", reason=problem, remote=request.remote_addr)
            return _text(f"refused: {problem}", 403)
        if not access.token_matches(request.form.get("token", "")):
            log.warning("operator_login_refused", reason="wrong token", remote=request.remote_addr)
            return _login_page("Wrong token.", 401)
        # A fresh session: nothing from before the login (such as a planted value) survives it.
        session.clear()
        session.permanent = True
        session.update(operator=True, csrf=secrets.token_urlsafe(32), since=int(time.time()))
        log.info("operator_logged_in", remote=request.remote_addr)
        return redirect("/", code=303)

    @bp.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect("/login", code=303)

    return bp
