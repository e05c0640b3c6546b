"""A private Dovecot IMAP server on free loopback ports, for tests, the benchmark and the demo.

Facts: ../shared/reference/imap-testing.md. ``DovecotServer`` writes its own dovecot.conf under
its folder (own base_dir, state_dir, log), listens on 127.0.0.1 with IMAP (+STARTTLS) and IMAPS
ports, presents a certificate issued by a ``CertAuthority`` (``ca_path`` is what a client
trusts; tests present a different CA to prove verification), and runs in the foreground so
``stop()`` owns the pid. Users live in one passwd-file each (a new user can log in at once).

Seeding: ``seed()`` writes maildir files straight into ``cur/`` (10,000 messages in about a
second); ``append()`` uses IMAP MULTIAPPEND (what a real delivery looks like to the server).

As root, mail is stored under the unprivileged ``nobody`` uid (Dovecot refuses uid 0 for mail)
and the folder is made traversable for it; as an ordinary user, every Dovecot process runs as
that user.

    with DovecotServer() as server:
        server.add_user("finance@kmrl.test", "secret")
        server.seed("finance@kmrl.test", [raw_message])
        ...  # connect to server.host:server.imaps_port trusting server.ca_path
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from imapclient import IMAPClient

from sandbox.servers import free_port
from sandbox.tls import CertAuthority

#: The Dovecot binary (Debian package dovecot-imapd).
DOVECOT_BINARY = "dovecot"
#: Seconds to wait for the IMAPS greeting after start.
START_TIMEOUT = 15.0
#: Seconds to wait for Dovecot and its children to exit after SIGTERM.
STOP_TIMEOUT = 10.0
#: Messages per IMAP MULTIAPPEND command.
APPEND_BATCH = 500
#: The hierarchy separator of the private server's namespace.
SEPARATOR = "/"


def dovecot_binary() -> str | None:
    """The path of the Dovecot binary, or None when Dovecot is not installed."""
    return shutil.which(DOVECOT_BINARY) or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)


def require_dovecot() -> str:
    """The Dovecot binary for a test; a missing one skips the test locally and fails it in CI.

    Only call this from tests (it imports pytest).
    """
    import pytest

    binary = dovecot_binary()
    if binary:
        return binary
    reason = ("Dovecot is not installed: apt-get install -y dovecot-imapd "
              "(make test installs it when run as root)")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class _MailOwner:
    uid: int
    gid: int
    user: str
    group: str


def _mail_owner() -> _MailOwner:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return _MailOwner(nobody.pw_uid, nobody.pw_gid, "nobody", grp.getgrgid(nobody.pw_gid).gr_name)
    me = pwd.getpwuid(os.geteuid())
    return _MailOwner(me.pw_uid, me.pw_gid, me.pw_name, grp.getgrgid(os.getegid()).gr_name)


def crlf(message: bytes) -> bytes:
    """``message`` with every line ending CRLF (what IMAP sends and maildir sizes count)."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class DovecotServer:
    """A private Dovecot instance. Use as a context manager, or ``start()`` / ``stop()``.

    directory: where config, mail, logs and certificates live (default: a new temporary folder,
        removed on ``stop()``); as root it must be traversable by ``nobody``.
    ca: the CertAuthority that signs the server certificate (default: a new one in the folder).
    host: the name clients connect to and the certificate is issued for (DNS "localhost" and IP
        127.0.0.1 are both in the certificate).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, ca: CertAuthority | None = None,
                 host: str = "127.0.0.1") -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kmrl-dovecot-"))
        self.host = host
        self.owner = _mail_owner()
        self._prepare_directory()
        self.ca = ca or CertAuthority(str(self.directory / "ca"))
        cert = self.ca.issue("dovecot", hosts=("localhost", "127.0.0.1"))
        self.cert_path, self.key_path = cert.cert_path, cert.key_path
        os.chmod(self.key_path, 0o600)
        self.imap_port = free_port(host)
        self.imaps_port = free_port(host)
        while self.imaps_port == self.imap_port:  # two asks may get the same free port back
            self.imaps_port = free_port(host)
        self.users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._seq = 0
        (self.directory / "users").mkdir(exist_ok=True)
        self._write_config()

    # -- paths ------------------------------------------------------------------------------------

    @property
    def ca_path(self) -> str:
        """The CA file a client must trust to verify this server."""
        return self.ca.ca_path

    @property
    def config_path(self) -> Path:
        return self.directory / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "dovecot.log"

    def home(self, user: str) -> Path:
        return self.directory / "mail" / user

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The maildir++ folder of ``folder`` (``INBOX`` is the Maildir root)."""
        root = self.home(user) / "Maildir"
        if folder.upper() == "INBOX":
            return root
        return root / ("." + folder.replace(SEPARATOR, "."))

    # -- configuration ----------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # Mail processes run as nobody: they must reach <dir>/mail and read the users file.
            os.chmod(self.directory, 0o711)  # noqa: S103 - traverse only, no listing, nothing secret
            os.chown(self.directory / "mail", self.owner.uid, self.owner.gid)

    def _write_user(self, user: str, password: str) -> None:
        # One passwd-file per user: Dovecot re-reads a passwd-file at most once a second, so a user
        # added to a shared file right after a login could not log in yet; a new file is read at once.
        folder = self.directory / "users"
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755)  # noqa: S103 - the auth process (another uid as root) reads it
        path = folder / user
        tmp = folder / f".{user}.tmp"
        tmp.write_text(f"{user}:{{PLAIN}}{password}::::::\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def _write_config(self) -> None:
        d = self.directory
        unprivileged = os.geteuid() != 0
        as_user = ""
        if unprivileged:
            as_user = f"""
default_internal_user = {self.owner.user}
default_internal_group = {self.owner.group}
default_login_user = {self.owner.user}
service imap-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
"""
        config = f"""# Written by sandbox/dovecot.py for one test server; not a production configuration.
instance_name = kmrl-dovecot-{self.imaps_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
listen = {self.host}
protocols = imap
ssl = yes
ssl_cert = <{self.cert_path}
ssl_key = <{self.key_path}
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 100
first_valid_uid = 1
namespace inbox {{
  inbox = yes
  separator = {SEPARATOR}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = static
  args = uid={self.owner.uid} gid={self.owner.gid} home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{as_user}"""
        self.config_path.write_text(config, encoding="utf-8")

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> DovecotServer:
        """Starts Dovecot in the foreground and waits for its IMAPS greeting."""
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("Dovecot is not installed (apt-get install -y dovecot-imapd)")
        if self._process is not None:
            return self
        log = open(self.directory / "dovecot.stderr", "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen([binary, "-F", "-c", str(self.config_path)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        context = ssl.create_default_context(cafile=self.ca_path)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"Dovecot exited with {self._process.returncode}: {self._tail_log()}")
            try:
                with socket.create_connection((self.host, self.imaps_port), timeout=1) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as tls:
                        if tls.recv(64).startswith(b"* OK"):
                            return
            except (OSError, ssl.SSLError) as exc:
                last_error = exc
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Dovecot did not greet on port {self.imaps_port} ({last_error}): {self._tail_log()}")

    def _tail_log(self) -> str:
        text = ""
        for name in ("dovecot.stderr", "dovecot.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text

    def stop(self, *, keep: bool = False) -> None:
        """SIGTERM to the master; waits until it and its children are gone. Removes the folder
        when this server created it, unless ``keep`` (``start()`` then brings it back as it was)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)
        if process is not None:
            self._wait_port_free()
        if self._own_dir and not keep and not self.running:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stops and starts the server on the same ports, keeping its mail."""
        self.stop(keep=True)
        self.start()

    def kill(self) -> None:
        """SIGKILL to the master (a crash); the mail stays. ``start()`` brings it back."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
            self._wait_port_free()

    def _wait_port_free(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.imaps_port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- users and folders ------------------------------------------------------------------------

    def add_user(self, user: str, password: str) -> None:
        """Adds ``user`` (usable at once), or changes its password (Dovecot notices within a second,
        so this waits that second)."""
        if not user or "/" in user or user.startswith("."):
            raise ValueError(f"not a usable mailbox user name: {user!r}")
        changed = user in self.users and self.users[user] != password
        self.users[user] = password
        self._write_user(user, password)
        if changed and self.running:
            time.sleep(1.1)

    def create_folder(self, user: str, folder: str) -> Path:
        """Creates the maildir of ``folder`` (with its parents) for ``user``; returns it."""
        path = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if folder.upper() != "INBOX":
            (path / "maildirfolder").touch()
        self._own(self.home(user))
        return path

    def _own(self, top: Path) -> None:
        if os.geteuid() != 0:
            return
        for root, dirs, files in os.walk(top):
            os.chown(root, self.owner.uid, self.owner.gid)
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), self.owner.uid, self.owner.gid)

    # -- seeding ----------------------------------------------------------------------------------

    def seed(self, user: str, messages: Iterable[bytes], folder: str = "INBOX", *, seen: bool = False,
             mtime: float | None = None) -> int:
        """Writes ``messages`` straight into the folder's ``cur/`` (CRLF line endings); returns how
        many. Dovecot assigns UIDs in file-name order at the next SELECT, so the order is kept."""
        path = self.create_folder(user, folder)
        cur = path / "cur"
        host = socket.gethostname().replace("/", "_").replace(":", "_")
        now = int(mtime if mtime is not None else time.time())
        pid = os.getpid()
        flags = "S" if seen else ""
        count = 0
        root = os.geteuid() == 0
        for message in messages:
            data = crlf(message)
            self._seq += 1
            name = f"{now}.M{self._seq:08d}P{pid}Q{self._seq}.{host},S={len(data)},W={len(data)}:2,{flags}"
            target = cur / name
            with open(target, "wb") as fh:
                fh.write(data)
            if root:
                os.chown(target, self.owner.uid, self.owner.gid)
            count += 1
        return count

    def append(self, user: str, messages: Iterable[bytes], folder: str = "INBOX", *,
               batch: int = APPEND_BATCH) -> int:
        """Delivers ``messages`` over IMAP (MULTIAPPEND, ``batch`` per command); returns how many."""
        count = 0
        with self.client(user) as client:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            pending: list[bytes] = []
            for message in messages:
                pending.append(crlf(message))
                if len(pending) >= batch:
                    client.multiappend(folder, pending)
                    count += len(pending)
                    pending = []
            if pending:
                client.multiappend(folder, pending)
                count += len(pending)
        return count

    def client(self, user: str, password: str | None = None) -> _LoggedInClient:
        """An IMAPClient over IMAPS, logged in as ``user`` (a context manager)."""
        return _LoggedInClient(self, user, self.users[user] if password is None else password)

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts this server's CA."""
        return ssl.create_default_context(cafile=self.ca_path)

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        with self.client(user) as client:
            return int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])

    def reset_uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """Rebuilds the folder's UID list the way a restored or migrated mailbox comes back: a new
        UIDVALIDITY and every message numbered again from 1. Stops and restarts the server around
        it. Returns the new UIDVALIDITY."""
        old = self.uidvalidity(user, folder)
        own, self._own_dir = self._own_dir, False
        try:
            self.stop()
        finally:
            self._own_dir = own
        path = self.maildir(user, folder)
        for name in os.listdir(path):
            if name.startswith("dovecot"):
                target = path / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
        new = old + 1 + int(time.time()) % 1000
        # Dovecot keeps an existing uidlist's UIDVALIDITY; writing the header forces a new one even
        # within the same second as the old (new files get UIDs from N).
        uidlist = path / "dovecot-uidlist"
        uidlist.write_text(f"3 V{new} N1\n", encoding="ascii")
        if os.geteuid() == 0:
            os.chown(uidlist, self.owner.uid, self.owner.gid)
        self.start()
        return self.uidvalidity(user, folder)


class _LoggedInClient:
    def __init__(self, server: DovecotServer, user: str, password: str) -> None:
        self.server, self.user, self.password = server, user, password
        self._client: IMAPClient | None = None

    def __enter__(self) -> IMAPClient:
        client = IMAPClient(self.server.host, port=self.server.imaps_port, ssl=True,
                            ssl_context=self.server.ssl_context(), timeout=30)
        client.login(self.user, self.password)
        self._client = client
        return client

    def __exit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the server may be gone (restart tests)
                client.logout()


def message_flags(server: DovecotServer, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
    """UID -> flags of every message in ``folder``, read without changing anything (EXAMINE)."""
    with server.client(user) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        if not uids:
            return {}
        return {int(uid): tuple(data[b"FLAGS"]) for uid, data in client.fetch(uids, ["FLAGS"]).items()}


#: The sandbox mailbox's password when the simulator runs on its own (a sandbox value, no real system's).
SANDBOX_MAIL_PASSWORD = "sandbox-mail-password"


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.dovecot``: a private Dovecot with the demo mailbox (records@kmrl.co.in) and
    the sample mails in its INBOX, until Ctrl-C; prints its address and the EMAIL_* lines to use."""
    import argparse
    import sys

    from sandbox.announce import announce, wait_for_stop
    from sandbox.samples import DEMO_MAILBOX, kmrl_samples

    parser = argparse.ArgumentParser(prog="python -m sandbox.dovecot",
                                     description="A private Dovecot IMAP server with the demo mailbox.")
    parser.add_argument("--dir", help="where its configuration, mail and CA live (default: a temporary folder, "
                                      "removed when it stops); as root it must be traversable by nobody")
    parser.add_argument("--password", default=SANDBOX_MAIL_PASSWORD, help="the mailbox's password")
    args = parser.parse_args(argv)
    if dovecot_binary() is None:
        print("Dovecot is not installed: apt-get install -y dovecot-imapd", file=sys.stderr)
        return 1
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    server = DovecotServer(args.dir).start()
    try:
        server.add_user(DEMO_MAILBOX, args.password)
        server.create_folder(DEMO_MAILBOX, "INBOX")
        mails = kmrl_samples().mails
        server.append(DEMO_MAILBOX, [mail.to_bytes() for mail in mails])
        announce("Dovecot (IMAPS)", f"imaps://{server.host}:{server.imaps_port}", {
            "EMAIL_HOST": server.host, "EMAIL_PORT": str(server.imaps_port), "EMAIL_USER": DEMO_MAILBOX,
            "EMAIL_PASSWORD": args.password, "EMAIL_SSL_CA_FILE": os.path.abspath(server.ca_path),
            "EMAIL_FOLDERS": "INBOX"})
        wait_for_stop()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
