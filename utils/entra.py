"""App-only access tokens from Microsoft Entra ID (OAuth2 client credentials) through msal.

One ``ConfidentialClientApplication`` per (authority, tenant, client, secret, CA) per process: msal
keeps its token cache in the application object, so reusing it is what makes a token last its full
lifetime (an hour) instead of one run. Tokens live only in that in-memory cache, never in Redis.
Entra's refusals carry an AADSTS code; ``EntraAuth`` turns them into ``AuthError`` (our
credentials are wrong) or ``ConfigError`` (a setting is wrong) with the code in the message.
Facts: reference/api-contracts.md A1.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from typing import Any

import msal
import requests

from utils import http
from utils.errors import AuthError, ConfigError, OriginNotAllowed, TransientError
from utils.http import OriginPolicy, ResponseTooLarge, read_capped
from utils.logging import get_logger, redact_url, register_secret

log = get_logger(__name__)

#: The app-only scope for Microsoft Graph (client credentials need ``/.default``).
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Public-cloud Entra ID; the tenant id is appended to it.
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
#: (connect, read) timeouts for discovery and token requests, seconds.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: AADSTS codes that mean the credentials themselves are wrong (scope state ``auth_failed``).
CREDENTIAL_CODES: Mapping[int, str] = {
    7000215: "invalid client secret",
    7000222: "client secret expired",
    7000218: "no client secret sent",
    700016: "application not found in the tenant",
    700023: "invalid authority for this app",
    90002: "tenant not found",
    90023: "invalid tenant",
    50034: "account does not exist",
    53003: "blocked by conditional access",
    7000112: "application disabled",
}

_AADSTS = re.compile(r"AADSTS(\d+)")
_apps: dict[tuple[str, ...], msal.ConfidentialClientApplication] = {}
_apps_lock = threading.Lock()


class _PinnedVerifySession(requests.Session):
    """The session msal sends through: ``verify`` survives REQUESTS_CA_BUNDLE (requests lets the
    environment override a session's ``verify``, issue 3829), a default timeout (msal sets none), and
    utils.http's rules: the client secret goes to the authority's origin only (an OIDC discovery
    answer naming a token endpoint elsewhere is refused; redirects are not followed, Entra sends
    none), and an answer is read into memory only up to ``utils.http.MAX_BODY_BYTES``."""

    def __init__(self, verify: str | bool, timeout: tuple[float, float], origins: OriginPolicy) -> None:
        super().__init__()
        self.verify = verify
        self._timeout = timeout
        self._origins = origins

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        target = url.decode() if isinstance(url, bytes) else url
        if not self._origins.allows(target):
            raise OriginNotAllowed(f"Entra: refusing to send the app's credentials to {redact_url(target)}: only "
                                   f"{self._origins.describe()} may receive them")
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("timeout", self._timeout)
        kwargs["allow_redirects"] = False
        kwargs["stream"] = True
        response = super().request(method, url, *args, **kwargs)
        if not read_capped(response, http.MAX_BODY_BYTES):
            raise ResponseTooLarge(f"Entra answered {redact_url(target)} with more than "
                                   f"{http.MAX_BODY_BYTES / (1024 * 1024):g} MiB")
        return response


def describe_aad_error(text: str) -> str:
    """``AADSTS7000215 (invalid client secret): <Entra's first sentence>`` from an error description."""
    match = _AADSTS.search(text or "")
    if match is None:
        return " ".join((text or "").split())[:200]
    code = int(match.group(1))
    message = text[match.end():].lstrip(": ")
    message = re.split(r"(?<=\.)\s|\s*Trace ID:", message, maxsplit=1)[0].strip()
    meaning = CREDENTIAL_CODES.get(code)
    return f"AADSTS{code}" + (f" ({meaning})" if meaning else "") + (f": {message[:200]}" if message else "")


def _aad_code(text: str) -> int | None:
    match = _AADSTS.search(text or "")
    return int(match.group(1)) if match else None


class EntraAuth:
    """Client-credential tokens for one app registration.

    tenant_id, client_id, client_secret: the app registration (the secret is registered with the log
        redactor and never appears in an error).
    authority: Entra's base URL (default ``DEFAULT_AUTHORITY``); the tenant id is appended.
    ca_file: a CA bundle to verify the authority with (a test authority); default the system store.
    scope: what the token is for (default ``GRAPH_SCOPE``).
    """

    def __init__(self, *, tenant_id: str, client_id: str, client_secret: str, authority: str = DEFAULT_AUTHORITY,
                 ca_file: str | None = None, scope: str = GRAPH_SCOPE,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        missing = [name for name, value in (("tenant_id", tenant_id), ("client_id", client_id),
                                            ("client_secret", client_secret)) if not value]
        if missing:
            raise ConfigError(f"Entra credentials lack {', '.join(missing)}")
        register_secret(client_secret)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.authority = f"{authority.rstrip('/')}/{tenant_id}"
        self.scope = scope
        self._secret = client_secret
        self._ca_file = ca_file
        self._timeout = timeout

    def _key(self) -> tuple[str, ...]:
        # The secret takes part through its digest only: a rotated secret needs a new application.
        digest = hashlib.sha256(self._secret.encode()).hexdigest()
        return (self.authority, self.client_id, digest, self._ca_file or "")

    def application(self) -> msal.ConfidentialClientApplication:
        """The process's application for these credentials (built once; building it runs discovery)."""
        key = self._key()
        with _apps_lock:
            app = _apps.get(key)
            if app is not None:
                return app
            session = _PinnedVerifySession(self._ca_file or True, self._timeout,
                                           OriginPolicy.of(self.authority, setting="ENTRA_AUTHORITY"))
            try:
                app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._secret, authority=self.authority,
                    http_client=session,
                    # msal skips instance discovery for Microsoft's own hosts anyway; for any other
                    # authority (the simulator) it would ask login.microsoftonline.com, and after an
                    # error it would fetch authority aliases from there too.
                    instance_discovery=False,
                )
            except ValueError as exc:
                # msal replaces discovery's answer with generic advice; Entra's AADSTS text is in the
                # exception it was raised from.
                text = f"{exc} {exc.__context__ or ''}"
                code = _aad_code(text)
                what = describe_aad_error(text) if code else "OIDC discovery refused"
                error = AuthError if code in CREDENTIAL_CODES else ConfigError
                raise error(f"Entra refused the authority {self.authority} ({what})") from None
            except (requests.RequestException, RuntimeError, msal.exceptions.MsalServiceError) as exc:
                # RecursionError (a RuntimeError): discovery JSON nested too deeply for msal to parse.
                raise TransientError(f"Entra discovery at {self.authority} failed: {type(exc).__name__}") from None
            _apps[key] = app
            return app

    def token(self, *, refresh: bool = False) -> tuple[str, str]:
        """(access token, where it came from: ``cache`` or ``identity_provider``).

        refresh: drop the cached token first (Graph refused it) and ask Entra for a new one.
        Raises AuthError for wrong credentials, ConfigError for other refusals, TransientError
        when Entra cannot be reached or answers 5xx.
        """
        app = self.application()
        if refresh:
            app.remove_tokens_for_client()
        try:
            result = app.acquire_token_for_client(scopes=[self.scope])
        except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            raise TransientError(f"Entra token request failed: {type(exc).__name__}") from None
        except ValueError as exc:  # a body that is not JSON
            raise TransientError(f"Entra answered the token request with an unreadable body: {exc}") from None
        except RecursionError:
            raise TransientError("Entra answered the token request with JSON nested too deeply to parse") from None
        access_token = result.get("access_token") if isinstance(result, dict) else None
        if access_token:
            source = str(result.get("token_source", "identity_provider"))
            if source != "cache":
                log.info("entra_token_acquired", tenant=self.tenant_id, client_id=self.client_id,
                         expires_in=result.get("expires_in"))
            return str(access_token), source
        if not isinstance(result, dict) or not result.get("error"):
            # Neither a token nor a refusal: a broken answer (from Entra or a proxy), not our settings.
            raise TransientError("Entra answered the token request with neither an access_token nor an error")
        raise self._refusal(result)

    def _refusal(self, result: Mapping[str, Any]) -> Exception:
        error = str(result.get("error") or "unknown_error")
        description = str(result.get("error_description") or "")
        codes = result.get("error_codes") or []
        code = int(codes[0]) if codes and str(codes[0]).isdigit() else _aad_code(description)
        what = describe_aad_error(description) if code else error
        message = f"Entra refused the client-credentials token for app {self.client_id} ({error}: {what})"
        if error in ("temporarily_unavailable", "server_error"):
            return TransientError(message)
        if error in ("invalid_client", "unauthorized_client") or code in CREDENTIAL_CODES:
            return AuthError(message)
        return ConfigError(message)


def reset_applications() -> None:
    """Forgets every application and its token cache (a new worker process, in tests)."""
    with _apps_lock:
        _apps.clear()
