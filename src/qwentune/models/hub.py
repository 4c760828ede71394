"""Talking to the Hugging Face hub without hanging when there is no network.

huggingface_hub and datasets retry a failed connection for tens of seconds before they
give up; a two-second TCP probe first turns "offline" into one clear sentence at once.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path, PureWindowsPath
from urllib.parse import urlparse

from ..errors import UserError

PROBE_TIMEOUT_S = 2.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_is_reachable() -> bool:
    """Whether a TCP connection to the hub opens within PROBE_TIMEOUT_S; probed once per process and endpoint."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    return _probe(hub_endpoint())


@functools.lru_cache(maxsize=None)
def _probe(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def require_hub(what: str, local_hint: str) -> None:
    """Raise a UserError naming `what` and the local alternative when the hub cannot be reached."""
    if not hub_is_reachable():
        raise UserError(
            f"cannot reach the Hugging Face hub ({hub_endpoint()}) to fetch {what}: this machine looks offline "
            f"(or HF_HUB_OFFLINE is set); {local_hint}"
        )


def written_as_path(name: str) -> bool:
    """Whether `name` is written as a file system path rather than a hub id (owner/name): ./x, /x, ~/x, a/b/c,
    or a Windows path (C:\\x, D:/x, .\\x, a\\b: hub ids never hold a backslash or a drive)."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or bool(PureWindowsPath(name).drive))


def is_local_reference(name: str) -> bool:
    """A path (written as one, or anything that exists here) rather than a hub id like owner/name."""
    return written_as_path(name) or Path(name).expanduser().exists()
