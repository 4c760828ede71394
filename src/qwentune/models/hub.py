"""Talking to a model hub without hanging when there is no network: the Hugging Face hub (or the mirror
HF_ENDPOINT names, such as https://hf-mirror.com) or ModelScope (model.hub: modelscope, the `modelscope`
package, the optional extra of that name).

huggingface_hub and datasets retry a failed connection for tens of seconds before they
give up; a two-second TCP probe first turns "offline" into one clear sentence at once, naming the hub that
was tried and the ways out: a mirror, the other hub, or local files.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
from pathlib import Path, PureWindowsPath
from urllib.parse import urlparse

from ..errors import UserError

PROBE_TIMEOUT_S = 2.0


HUBS = ("huggingface", "modelscope")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_MIRROR_EXAMPLE = "https://hf-mirror.com"
_selected = {"hub": "huggingface"}


def select_hub(name: str) -> None:
    """Where hub ids of models, tokenizers and named datasets are fetched from in this process (model.hub);
    set once where a run's config is read (the CLI, train, evaluate)."""
    assert name in HUBS, name
    _selected["hub"] = name


def selected_hub() -> str:
    """The hub select_hub chose: huggingface (the default) or modelscope."""
    return _selected["hub"]


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT)


def modelscope_endpoint() -> str:
    """The ModelScope site the modelscope package talks to: MODELSCOPE_ENDPOINT, else the older MODELSCOPE_DOMAIN,
    else www.modelscope.cn (the order modelscope_hub/config.py reads them in)."""
    domain = (os.environ.get("MODELSCOPE_ENDPOINT", "").strip() or os.environ.get("MODELSCOPE_DOMAIN", "").strip()
              or "www.modelscope.cn")
    return domain if "://" in domain else f"https://{domain}"


def hub_is_reachable() -> bool:
    """Whether a TCP connection to the selected hub opens within PROBE_TIMEOUT_S; probed once per process and
    endpoint."""
    if selected_hub() == "modelscope":
        return _probe(modelscope_endpoint())
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


def hub_name() -> str:
    """The hub that is tried, as messages name it: ModelScope (its site), the Hugging Face hub, or the mirror."""
    if selected_hub() == "modelscope":
        return f"ModelScope ({modelscope_endpoint()})"
    endpoint = hub_endpoint()
    if endpoint.rstrip("/") != HF_DEFAULT_ENDPOINT:
        return f"the Hugging Face hub mirror {endpoint} (HF_ENDPOINT)"
    return f"the Hugging Face hub ({endpoint})"


def ways_out(local_hint: str, on_modelscope: bool = True) -> str:
    """Both other ways to get the files: the other hub (or a mirror), or local files (on_modelscope: whether
    ModelScope is known to hold them, so worth naming)."""
    if selected_hub() == "modelscope":
        other = f"use the Hugging Face hub or a mirror instead (--hub huggingface, HF_ENDPOINT={HF_MIRROR_EXAMPLE})"
    elif hub_endpoint().rstrip("/") != HF_DEFAULT_ENDPOINT:
        other = "try another mirror (HF_ENDPOINT)" + " or ModelScope (--hub modelscope)" * on_modelscope
    else:
        other = f"use a mirror (HF_ENDPOINT={HF_MIRROR_EXAMPLE})" + " or ModelScope (--hub modelscope)" * on_modelscope
    return f"{other}; or use local files: {local_hint}"


def require_modelscope() -> None:
    """UserError when --hub modelscope is chosen but the modelscope package is not installed."""
    if importlib.util.find_spec("modelscope") is None:
        raise UserError(
            "--hub modelscope needs the modelscope package, which is not installed; pip install "
            "'qwentune[modelscope]' (or pip install modelscope), or use the Hugging Face hub or a mirror "
            f"(--hub huggingface, HF_ENDPOINT={HF_MIRROR_EXAMPLE})."
        )


def require_hub(what: str, local_hint: str, on_modelscope: bool = True) -> None:
    """Raise a UserError naming `what`, the hub tried and the ways out when the selected hub cannot be reached."""
    if selected_hub() == "modelscope":
        require_modelscope()
    if not hub_is_reachable():
        offline = " (or HF_HUB_OFFLINE is set)" if selected_hub() == "huggingface" else ""
        raise UserError(
            f"cannot reach {hub_name()} to fetch {what}: this machine looks offline{offline}; "
            f"{ways_out(local_hint, on_modelscope)}"
        )


def modelscope_snapshot(repo_id: str, what: str, local_hint: str) -> str:
    """The local directory of ModelScope repository `repo_id` (from modelscope's cache, else downloaded)."""
    require_modelscope()
    from modelscope import snapshot_download

    try:  # already in modelscope's cache: no network needed
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # modelscope raises ValueError / its own errors for "not cached"
        pass
    require_hub(what, local_hint)
    try:
        return snapshot_download(repo_id)
    except Exception as exc:  # not on ModelScope, or the download failed: modelscope's errors are its own classes
        raise UserError(f"could not fetch {what} from {hub_name()} ({str(exc).splitlines()[0][:200]}); check the "
                        f"id on modelscope.cn, or {ways_out(local_hint)}") from None


def written_as_path(name: str) -> bool:
    """Whether `name` is written as a file system path rather than a hub id (owner/name): ./x, /x, ~/x, a/b/c,
    or a Windows path (C:\\x, D:/x, .\\x, a\\b: hub ids never hold a backslash or a drive)."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or bool(PureWindowsPath(name).drive))


def is_local_reference(name: str) -> bool:
    """A path (written as one, or anything that exists here) rather than a hub id like owner/name."""
    return written_as_path(name) or Path(name).expanduser().exists()
