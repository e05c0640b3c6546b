"""The watcher's IMAP reader (watchers/imap_wire.py) on real sockets (a connected pair): responses
split across reads, literals, timeouts that lose nothing, and the connection's end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from watchers.imap_channels import parse_status, response_code
from watchers.imap_wire import ConnectionDropped, ImapWire, ProtocolError, Response, quoted_mailbox


@pytest.fixture
def pair() -> Iterator[tuple[ImapWire, socket.socket]]:
    ours, server = socket.socketpair()
    yield ImapWire(ours), server
    ours.close()
    server.close()


def test_a_response_split_across_reads_comes_whole_and_a_timeout_loses_nothing(pair):
    wire, server = pair
    server.sendall(b"* STATUS INBOX (MESSAGES 3 UIDNE")
    assert wire.read(0.05) is None                     # half a line: nothing yet, nothing lost
    server.sendall(b"XT 7 UIDVALIDITY 42)\r\n* OK Still here\r\n")
    first = wire.read(1)
    assert first == Response("*", b"STATUS INBOX (MESSAGES 3 UIDNEXT 7 UIDVALIDITY 42)")
    assert parse_status(first) == ("INBOX", {"MESSAGES": 3, "UIDNEXT": 7, "UIDVALIDITY": 42})
    assert wire.read(0) == Response("*", b"OK Still here")  # already buffered: no wait needed


def test_a_mailbox_name_sent_as_a_literal_is_read_across_chunks(pair):
    wire, server = pair
    name = b'Circulars 2024 "new"'
    server.sendall(b"* STATUS {" + str(len(name)).encode() + b"}\r\n" + name[:5])
    assert wire.read(0.05) is None
    server.sendall(name[5:] + b" (UIDNEXT 12 UIDVALIDITY 9)\r\n")
    response = wire.read(1)
    assert response is not None and response.literals == (name,)
    assert parse_status(response) == ('Circulars 2024 "new"', {"UIDNEXT": 12, "UIDVALIDITY": 9})


def test_quoted_and_non_ascii_mailbox_names_round_trip_through_modified_utf7(pair):
    wire, server = pair
    folder = 'സർക്കുലർ "A\\B"'
    server.sendall(b"* STATUS " + quoted_mailbox(folder) + b" (UIDNEXT 2)\r\n")
    response = wire.read(1)
    assert response is not None and parse_status(response) == (folder, {"UIDNEXT": 2})


def test_response_codes_and_tagged_answers_are_told_apart(pair):
    wire, server = pair
    server.sendall(b"* OK [UIDNEXT 5] Predicted next UID\r\n* OK [NOTIFICATIONOVERFLOW] stopped\r\nW1 OK done\r\n")
    assert response_code(wire.read(1)) == ("UIDNEXT", 5)
    assert response_code(wire.read(1)) == ("NOTIFICATIONOVERFLOW", None)
    assert wire.read(1) == Response("W1", b"OK done")


def test_a_command_collects_untagged_responses_until_its_tag(pair):
    wire, server = pair

    def answer() -> None:
        line = server.recv(100)
        tag = line.split(b" ")[0]
        server.sendall(b"* STATUS INBOX (UIDNEXT 3)\r\n" + tag + b" OK NOOP completed\r\n")

    threading.Thread(target=answer).start()
    untagged: list[Response] = []
    answer_to = wire.command(b"NOOP", timeout=2, untagged=untagged)
    assert answer_to.text == b"OK NOOP completed"
    assert [r.text for r in untagged] == [b"STATUS INBOX (UIDNEXT 3)"]


def test_a_command_without_an_answer_or_answered_by_bye_drops_the_connection(pair):
    wire, server = pair
    with pytest.raises(ConnectionDropped, match="no answer to NOOP"):
        wire.command(b"NOOP", timeout=0.2)
    server.sendall(b"* BYE Server shutting down.\r\n")
    with pytest.raises(ConnectionDropped, match="ended the session"):
        wire.command(b"NOOP", timeout=2)


def test_the_server_closing_or_close_from_another_thread_ends_a_blocked_read(pair):
    wire, _server = pair
    started = time.monotonic()
    threading.Timer(0.2, wire.close).start()
    with pytest.raises(ConnectionDropped):
        wire.read(10)
    assert time.monotonic() - started < 5
    other, peer = socket.socketpair()
    peer.close()
    with pytest.raises(ConnectionDropped, match="closed the connection"):
        ImapWire(other).read(1)
    other.close()


def test_an_oversized_literal_or_unbalanced_list_is_a_protocol_error(pair):
    wire, server = pair
    server.sendall(b"* STATUS {99999999}\r\n")
    with pytest.raises(ProtocolError, match="literal"):
        wire.read(1)
    with pytest.raises(ProtocolError, match="unbalanced"):
        Response("*", b"STATUS INBOX (UIDNEXT 3").tokens()


# -- IDLE's re-issue timer, against a scripted server on the other end of the pair ---------------------

class Seen:
    """A FolderWatch that records what a channel reports."""

    def __init__(self) -> None:
        self.sightings: list[tuple[str, int | None, int | None]] = []
        self.arrivals: list[str] = []

    def sighting(self, folder: str, uidvalidity: int | None, uidnext: int | None, *, reason: str) -> None:
        self.sightings.append((folder, uidvalidity, uidnext))

    def arrived(self, folder: str, *, reason: str) -> None:
        self.arrivals.append(folder)


def scripted_idle_server(server: socket.socket, commands: list[tuple[float, bytes]], stop: threading.Event) -> None:
    """Answers EXAMINE, IDLE and DONE as Dovecot does; records each command line with its time; after the
    second IDLE, reports a new message."""
    buffer, idle_tag, idles = b"", b"", 0
    server.settimeout(0.05)
    while not stop.is_set():
        try:
            chunk = server.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while b"\r\n" in buffer:
            line, buffer = buffer.split(b"\r\n", 1)
            commands.append((time.monotonic(), line))
            tag, _, rest = line.partition(b" ")
            if rest.startswith(b"EXAMINE"):
                server.sendall(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 77] UIDs valid\r\n* OK [UIDNEXT 4] Predicted\r\n"
                               + tag + b" OK [READ-ONLY] Examine completed\r\n")
            elif rest == b"IDLE":
                idle_tag, idles = tag, idles + 1
                server.sendall(b"+ idling\r\n" + (b"* 4 EXISTS\r\n" if idles == 2 else b""))
            elif line == b"DONE":
                server.sendall(idle_tag + b" OK Idle completed\r\n")


def test_idle_is_ended_and_issued_again_every_keepalive_and_sees_exists_in_between():
    from watchers.imap_channels import IdleChannel

    ours, server = socket.socketpair()
    commands: list[tuple[float, bytes]] = []
    stop = threading.Event()
    threading.Thread(target=scripted_idle_server, args=(server, commands, stop), daemon=True).start()
    seen = Seen()
    channel = IdleChannel(ImapWire(ours), ["INBOX"], seen, timeout=2, keepalive=0.2)
    channel.start()
    runner = threading.Thread(target=channel.run)
    runner.start()
    time.sleep(1.1)
    channel.close()
    runner.join(timeout=5)
    stop.set()
    ours.close()
    server.close()
    lines = [line.split(b" ", 1)[-1] for _, line in commands]
    assert lines[:6] == [b'EXAMINE "INBOX"', b"IDLE", b"DONE", b"IDLE", b"DONE", b"IDLE"]
    assert seen.sightings == [("INBOX", 77, 4)] and seen.arrivals == ["INBOX"]  # 3 -> 4 EXISTS: one arrival
    assert channel.idles >= 4
    idle_times = [at for at, line in commands if line.endswith(b" IDLE")]
    done_times = [at for at, line in commands if line == b"DONE"]
    for started, ended in zip(idle_times, done_times, strict=False):
        assert 0.19 <= ended - started < 0.45  # each IDLE ends after one keepalive, not later
