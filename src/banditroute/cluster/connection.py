"""The replica's connection to the cluster's Valkey/Redis server, and whether it is degraded.

Route must never wait long on the network: every command runs with a small socket timeout
(``cluster.timeout_s``) and no retries, and the first failure opens a circuit: the replica is
*degraded*, decides on local state, and sends nothing until ``cluster.retry_s`` has passed,
when one caller tries again (the others keep being refused at once). A success closes the
circuit; listeners (:meth:`ClusterLink.on_change`) hear of both transitions, so local state
can be pushed back when the server returns.

Background work that may block (stream reads, pub/sub) takes its own client
(:meth:`ClusterLink.background_client`), so a slow read never holds a Route's connection.
The client library is valkey-py (``banditroute[cluster]``): the Valkey project's client,
API-compatible with redis-py and speaking to Redis and Valkey alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from banditroute.config import ClusterSettings
from banditroute.errors import ConfigError

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS = 200
"""How much of a client error's text a status or log line keeps."""


class Degraded(Exception):
    """The cluster server cannot be used now (circuit open, or the command just failed)."""


def replica_name(settings: ClusterSettings) -> str:
    """This replica's id: the configured one, else ``HOSTNAME-DIGEST`` with a digest of the
    absolute log path (the same after a restart on the same log; two replicas on one host
    have two logs), or ``HOSTNAME-PID`` without a log path."""
    if settings.replica_id:
        return settings.replica_id
    if not settings.log_path:
        return f"{socket.gethostname()}-{os.getpid()}"
    path = os.path.abspath(settings.log_path).encode("utf-8", "surrogateescape")
    return f"{socket.gethostname()}-{hashlib.blake2b(path, digest_size=4).hexdigest()}"


def client_errors() -> tuple[type[BaseException], ...]:
    import valkey.exceptions as errors

    # ConnectionError and TimeoutError: the server is gone or slow. A ResponseError (a
    # script's error, a wrong type) also means shared state cannot be trusted for this call.
    return (errors.ValkeyError, OSError)


def make_client(url: str, *, timeout_s: float, connect_timeout_s: float, name: str) -> Any:
    """A valkey-py client for ``url`` with bounded timeouts and no retries; ConfigError naming
    ``cluster.url`` when the library is missing or the URL is refused."""
    try:
        import valkey
    except ImportError:
        raise ConfigError(
            "cluster.url: the cluster needs the valkey client: pip install 'banditroute[cluster]'",
            field="cluster.url",
        ) from None
    try:
        return valkey.Valkey.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
            client_name=name,
        )
    except ValueError as exc:  # the library's own URL checks (never echo the URL: a password)
        raise ConfigError(
            f"cluster.url: {str(exc)[:MAX_ERROR_CHARS].replace(url, '<url>')}",
            field="cluster.url",
        ) from None


@dataclass(frozen=True)
class LinkStatus:
    """Where the link stands: ``degraded`` since ``degraded_since`` (epoch seconds), why
    (``last_error``), and how many times it has gone down since the start."""

    degraded: bool
    degraded_since: float | None
    last_error: str
    outages: int


class ClusterLink:
    """One replica's client for the cluster server, with a circuit that marks it degraded.

    :meth:`call` runs a function on the client, or raises :class:`Degraded` at once while the
    circuit is open. Keys are built with :meth:`key` so that every key of a deployment starts
    with ``cluster.key_prefix``.
    """

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        if not settings.enabled:
            raise ValueError("ClusterLink needs cluster.url")
        self.settings = settings
        self.replica_id = replica_name(settings)
        self._clock = clock
        self._client = client or make_client(
            settings.url,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            name=f"{settings.key_prefix}-{self.replica_id}"[:64],
        )
        self._errors = client_errors()
        self._lock = threading.Lock()
        self._degraded = False
        self._degraded_since: float | None = None
        self._retry_at = 0.0
        self._last_error = ""
        self._outages = 0
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def client(self) -> Any:
        """The underlying valkey-py client (Route's: short timeouts)."""
        return self._client

    def key(self, *parts: str) -> str:
        """A key of this deployment: ``PREFIX:part:part...``."""
        return ":".join((self.settings.key_prefix, *parts))

    @property
    def degraded(self) -> bool:
        """True while the server is considered unreachable."""
        return self._degraded

    def status(self) -> LinkStatus:
        """The link's state now."""
        with self._lock:
            return LinkStatus(self._degraded, self._degraded_since, self._last_error, self._outages)

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(degraded)`` whenever the link goes down or comes back (from the
        thread whose call noticed; keep it short and never call the link from it)."""
        self._listeners.append(listener)

    def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, or :class:`Degraded` if the circuit is open or ``fn`` fails with a
        client error (which opens it)."""
        with self._lock:
            if self._degraded:
                now = self._clock()
                if now < self._retry_at:
                    raise Degraded(self._last_error)
                self._retry_at = now + self.settings.retry_s  # one trial per retry period
        try:
            result = fn(self._client)
        except self._errors as exc:
            self._failed(exc)
            raise Degraded(self._last_error) from exc
        if self._degraded:
            self._recovered()
        return result

    def try_call(self, fn: Callable[[Any], T]) -> T | None:
        """``fn(client)``, or None when degraded (see :meth:`call`)."""
        try:
            return self.call(fn)
        except Degraded:
            return None

    def ping(self) -> bool:
        """Whether the server answers now (subject to the circuit)."""
        return self.try_call(lambda client: client.ping()) is not None

    def script(self, source: str) -> Any:
        """A registered Lua script: calling it runs EVALSHA (loading it on NOSCRIPT), so the
        text crosses the network once per server start."""
        return self._client.register_script(source)

    def background_client(self, timeout_s: float = 5.0) -> Any:
        """A separate client for background work whose commands may take up to ``timeout_s``
        (blocking reads, pub/sub), so it never holds Route's connections."""
        return make_client(
            self.settings.url,
            timeout_s=timeout_s,
            connect_timeout_s=self.settings.connect_timeout_s,
            name=f"{self.settings.key_prefix}-{self.replica_id}-bg"[:64],
        )

    def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(*self._errors):
            self._client.close()

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        with self._lock:
            self._last_error = text
            self._retry_at = self._clock() + self.settings.retry_s
            went_down = not self._degraded
            if went_down:
                self._degraded = True
                self._degraded_since = time.time()
                self._outages += 1
        if went_down:
            log.warning("cluster_degraded", replica=self.replica_id, error=text)
            self._notify(True)

    def _recovered(self) -> None:
        with self._lock:
            came_back = self._degraded
            self._degraded = False
            self._degraded_since = None
        if came_back:
            log.info("cluster_recovered", replica=self.replica_id)
            self._notify(False)

    def _notify(self, degraded: bool) -> None:
        for listener in self._listeners:
            try:
                listener(degraded)
            except Exception:
                log.exception("cluster_listener_failed")


__all__ = [
    "ClusterLink",
    "Degraded",
    "client_errors",
    "LinkStatus",
    "make_client",
    "replica_name",
]
