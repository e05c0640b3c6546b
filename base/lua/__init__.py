"""The service's Lua scripts, one file each (``base/lua/NAME.lua``), shipped as package data.

Each file starts with a comment saying what it takes (KEYS, ARGV) and returns. ``source(name)``
reads a file once per process; callers register it once per client (``redis.Redis.register_script``),
after which redis-py runs it by its SHA (EVALSHA) and sends the text again only to a server that
has not seen it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(name: str) -> str:
    """The text of ``base/lua/{name}.lua`` (FileNotFoundError for an unknown name)."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
