"""Whether `pretrained: true` can load its weights here: in torch's cache, or downloadable now."""

from __future__ import annotations

import functools
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# TEST ONLY: `offline` or `online` answers the reachability question without a connection, so
# tests never depend on this machine's network. Never set it outside tests.
TEST_NETWORK_ENV = "HPSEARCH_TEST_NETWORK"
CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsStatus:
    """Where a model's published weights are, and whether this machine can get them."""

    model: str
    url: str
    path: Path  # where torch.hub keeps the file once downloaded
    cached: bool
    reachable: bool | None  # None: not asked, the file is already cached

    @property
    def available(self) -> bool:
        return self.cached or bool(self.reachable)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or self.url

    def problem(self) -> str:
        """Why `pretrained: true` cannot work here, and the fix, in one line."""
        return (
            f"`pretrained: true` needs {self.model}'s ImageNet weights, but they are not in "
            f"torch's cache ({self.path}) and {self.host} cannot be reached from this machine; "
            f"copy the file there from a machine that has it (or download {self.url} there), "
            "or set `pretrained: false`"
        )


def weights_status(model: str, *, timeout: float = CONNECT_TIMEOUT_S) -> WeightsStatus:
    """The published (torchvision `DEFAULT`) weights of `model`: cached, else reachable?"""
    import torch.hub

    from hpsearch.train.models import MODEL_REGISTRY

    entry = MODEL_REGISTRY.get(model)
    if entry is None:
        raise ValueError(f"{model} has no published weights")
    url = str(entry.weights.DEFAULT.url)
    # The file torch.hub.load_state_dict_from_url looks for before downloading.
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
    if path.is_file():
        return WeightsStatus(model, url, path, cached=True, reachable=None)
    return WeightsStatus(model, url, path, cached=False, reachable=can_reach(url, timeout))


def can_reach(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
    forced = os.environ.get(TEST_NETWORK_ENV)
    if forced in ("offline", "online"):
        return forced == "online"
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _connects(parts.hostname or "", port, timeout)


@functools.lru_cache(maxsize=16)  # one attempt per host per process
def _connects(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # The name lookup ignores socket timeouts and can hang on a broken resolver: bound it too.
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])
