"""Network namespaces joined to this host by veth pairs: each one a machine of its own for a worker.

``namespaces(count)`` creates ``count`` namespaces, each linked to the root namespace by a veth pair on
its own /30 subnet (host side ``.1``, namespace side ``.2``), links and loopback up, and a default
route through the host side, so a process in the namespace reaches servers bound to any host-side
address over its own veth, as another machine on the network would. Everything is removed when the
``with`` block ends, however it ends.

Names carry this process's pid and a counter (``kn<pid>-<n>h<i>``, at most 15 characters as Linux
wants for a link), so a run never collides with namespaces that a crashed earlier run left behind;
those (their pid gone, or our pid reused after a restart but not ours) are deleted before new ones are
made. Subnets are picked among the 10.231.0.0/16 ones no host address uses yet.

Needs root (CAP_NET_ADMIN) and ``ip`` from iproute2; ``require_netns()`` says why when they are missing.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

#: Every name this module makes starts with this, then the owner's pid.
PREFIX = "kn"
_NAME = re.compile(rf"^{PREFIX}(?P<pid>\d+)-(?P<seq>\d+)(?P<role>[hns])(?P<index>\d+)$")
#: The range the /30 subnets come from (16,384 of them).
POOL = ipaddress.IPv4Network("10.231.0.0/16")
#: Seconds an ``ip`` command may take.
IP_TIMEOUT = 20.0

_sequence = itertools.count(1)
_ours: set[str] = set()  # names this process made and has not removed yet


@dataclass(frozen=True)
class Link:
    """One namespace and its veth pair: ``exec_prefix`` runs a command inside it."""

    namespace: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


class NetnsUnavailable(RuntimeError):
    """This process cannot make network namespaces (not root, no ``ip``, or the kernel refused)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can be tried."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); run as root, as CI does"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed: apt-get install -y iproute2"
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if done.returncode != 0:
        return f"`ip netns` is unavailable: {done.stderr.strip()}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    match = _NAME.match(name)
    if match is None:
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return name not in _ours  # our pid, reused after a restart: a dead run's leftover
    return not _alive(pid)


def _namespace_names() -> list[str]:
    # Lines read "name" or "name (id: 3)".
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _link_names() -> list[str]:
    # Lines read "6: name@if5: <...> ..." (the part after @ names the peer).
    names = []
    for line in _ip("-o", "link", "show").stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def remove_stale() -> list[str]:
    """Deletes the namespaces and host-side links that runs no longer alive left behind; their names."""
    removed = []
    for name in _link_names():
        if _stale(name):
            _ip("link", "del", name, check=False)
            removed.append(name)
    for name in _namespace_names():
        if _stale(name):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _used_addresses() -> set[ipaddress.IPv4Address]:
    used: set[ipaddress.IPv4Address] = set()
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", _ip("-4", "-o", "addr", "show").stdout):
        used.add(ipaddress.IPv4Address(match[1]))
    return used


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /30 subnets of POOL with no address in use on this host, picked at random (two runs at
    once are unlikely to pick the same)."""
    used = _used_addresses()
    subnets: list[ipaddress.IPv4Network] = list(POOL.subnets(new_prefix=30))
    random.shuffle(subnets)
    free = [net for net in subnets if not any(addr in net for addr in used)]
    if len(free) < count:
        raise NetnsUnavailable(f"no {count} free /30 subnets left in {POOL}")
    return free[:count]


def _remove(link: Link) -> None:
    # Deleting the host side deletes the pair at once; a namespace's own removal of its links is lazy.
    _ip("link", "del", link.host_if, check=False)
    _ip("netns", "del", link.namespace, check=False)
    _ours.difference_update({link.namespace, link.host_if, link.ns_if})


def _create(seq: int, index: int, subnet: ipaddress.IPv4Network) -> Link:
    host_addr, ns_addr = (str(a) for a in itertools.islice(subnet.hosts(), 2))
    base = f"{PREFIX}{os.getpid()}-{seq}"
    link = Link(f"{base}n{index}", f"{base}h{index}", f"{base}s{index}", host_addr, ns_addr)
    if len(link.host_if) > 15:
        raise NetnsUnavailable(f"link name {link.host_if} is longer than Linux allows")
    _ours.update({link.namespace, link.host_if, link.ns_if})
    try:
        _ip("netns", "add", link.namespace)
        _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
        _ip("link", "set", link.ns_if, "netns", link.namespace)
        _ip("addr", "add", f"{host_addr}/{subnet.prefixlen}", "dev", link.host_if)
        _ip("link", "set", link.host_if, "up")
        _ip("-n", link.namespace, "addr", "add", f"{ns_addr}/{subnet.prefixlen}", "dev", link.ns_if)
        _ip("-n", link.namespace, "link", "set", link.ns_if, "up")
        _ip("-n", link.namespace, "link", "set", "lo", "up")
        _ip("-n", link.namespace, "route", "add", "default", "via", host_addr)
    except BaseException:
        _remove(link)
        raise
    return link


@contextmanager
def namespaces(count: int) -> Iterator[Sequence[Link]]:
    """``count`` linked namespaces for the ``with`` block (see the module docstring); raises
    NetnsUnavailable, with the reason, when they cannot be made."""
    reason = unavailable_reason()
    if reason:
        raise NetnsUnavailable(reason)
    remove_stale()
    seq = next(_sequence)
    links: list[Link] = []
    try:
        for index, subnet in enumerate(_free_subnets(count)):
            links.append(_create(seq, index, subnet))
        yield links
    finally:
        for link in reversed(links):
            _remove(link)
