"""Credentials for each source, read from the environment (and ``.env``), validated, never shown.

``CredentialsManager().get_email_credentials()`` and its siblings return a ``Credentials`` mapping:
a plain dict to the code that uses it, but its ``repr``/``str`` mask every secret, and every secret
it loads is registered with the log redactor. A missing variable raises ``ConfigError`` naming every
missing variable in one message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.settings import Settings, get_settings
from utils.errors import ConfigError
from utils.logging import MASK, register_secret

#: Keys whose values are secrets.
SECRET_KEYS = frozenset({"password", "api_key", "client_secret", "access_token", "app_secret", "verify_token",
                         "token"})


class Credentials(dict[str, Any]):
    """A dict of credentials whose printed forms mask secret values."""

    def masked(self) -> dict[str, Any]:
        return {k: (MASK if k in SECRET_KEYS and v else v) for k, v in self.items()}

    def __repr__(self) -> str:
        return f"Credentials({self.masked()!r})"

    def __str__(self) -> str:
        return repr(self)


class CredentialsManager:
    """Reads and checks each source's credentials (settings: default ``get_settings()``)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def _collect(self, source: str, fields: Mapping[str, str], *, required: tuple[str, ...],
                 defaults: Mapping[str, str] | None = None) -> Credentials:
        values: dict[str, Any] = {}
        for key, env_name in fields.items():
            values[key] = self.settings.env(env_name, (defaults or {}).get(key, ""))
        missing = [fields[k] for k in required if not values.get(k)]
        if missing:
            raise ConfigError(f"{source} is not configured: set {', '.join(missing)} (see env.example)")
        register_secret(*(str(v) for k, v in values.items() if k in SECRET_KEYS and v))
        return Credentials(values)

    def get_email_credentials(self) -> Credentials:
        """{"email", "password", "host", "port"} from EMAIL_USER, EMAIL_PASSWORD, EMAIL_HOST, EMAIL_PORT."""
        creds = self._collect("email", {"email": "EMAIL_USER", "password": "EMAIL_PASSWORD", "host": "EMAIL_HOST",
                                        "port": "EMAIL_PORT"},
                              required=("email", "password", "host"), defaults={"port": "993"})
        # Read as the email connector reads it (a number; "993.0" is 993).
        creds["port"] = int(self.settings.reader.number("EMAIL_PORT", 993, what="a TCP port number"))
        return creds

    def get_maximo_credentials(self) -> Credentials:
        """{"api_key"} or {"user", "password"}, as MAXIMO_AUTH says (apikey, maxauth or basic)."""
        auth = self.settings.env("MAXIMO_AUTH", "apikey").lower()
        if auth not in ("apikey", "maxauth", "basic"):
            raise ConfigError(f"MAXIMO_AUTH must be apikey, maxauth or basic, not {auth!r}")
        fields = {"url": "MAXIMO_URL"}
        if auth == "apikey":
            fields["api_key"] = "MAXIMO_API_KEY"
            required: tuple[str, ...] = ("url", "api_key")
        else:
            fields.update(user="MAXIMO_USER", password="MAXIMO_PASSWORD")
            required = ("url", "user", "password")
        creds = self._collect("maximo", fields, required=required)
        creds["auth"] = auth
        return creds

    def get_sharepoint_credentials(self) -> Credentials:
        """{"client_id", "client_secret", "tenant_id"} from SHAREPOINT_CLIENT_ID/_SECRET/_TENANT_ID."""
        return self._collect("sharepoint", {"client_id": "SHAREPOINT_CLIENT_ID",
                                            "client_secret": "SHAREPOINT_CLIENT_SECRET",
                                            "tenant_id": "SHAREPOINT_TENANT_ID"},
                             required=("client_id", "client_secret", "tenant_id"))

    def get_whatsapp_credentials(self) -> Credentials:
        """{"access_token", "phone_number_id", "app_secret", "verify_token"} from WHATSAPP_*."""
        return self._collect("whatsapp", {"access_token": "WHATSAPP_ACCESS_TOKEN",
                                          "phone_number_id": "WHATSAPP_PHONE_NUMBER_ID",
                                          "app_secret": "WHATSAPP_APP_SECRET",
                                          "verify_token": "WHATSAPP_VERIFY_TOKEN"},
                             required=("access_token", "phone_number_id"))


def credentials_report(manager: CredentialsManager) -> list[str]:
    """One line per source: its credentials with every secret masked, or what to set when it is not
    configured (never a traceback: README "Configuration" prints this)."""
    lines = []
    for source in ("email", "maximo", "sharepoint", "whatsapp"):
        try:
            creds = getattr(manager, f"get_{source}_credentials")()
        except ConfigError as exc:
            lines.append(f"{source}: {exc}")
        else:
            lines.append(f"{source}: {creds.masked()}")
    return lines


def main() -> int:
    """``python -m utils.credentials_manager``: what the service sees for each source, secrets masked;
    exit code 0 (a source that is not configured is a line saying what to set, not a failure)."""
    try:
        manager = CredentialsManager(Settings.from_env())
    except ConfigError as exc:
        print(f"settings: {exc}")
        return 2
    for line in credentials_report(manager):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
