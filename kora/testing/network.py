"""Network partitions between apps and a server: ``NetworkLink`` and ``partition``.

A :class:`NetworkLink` wraps a transport factory.  While the link is *cut*, its open
connections fail (``receive`` and ``send`` raise :class:`kora.sync.TransportClosed`) and new
ones are refused, as if the device lost its network; ``heal()`` lets connections through
again and the engine reconnects by itself (after its backoff)::

    link = NetworkLink(server.connect)
    app = ... SyncOptions(url="memory://", transport=link) ...
    with partition(link):              # or partition(app) for apps from open_test_app
        ...  # the app works offline; its writes wait in the durable queue
    # healed here

Cutting is synchronous and needs no task, so it works anywhere, including under
``trio.testing.MockClock``.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

from kora.app import App
from kora.sync.errors import TransportClosed
from kora.sync.transport import Frame, Transport, TransportFactory

__all__ = ["NetworkLink", "link_of", "partition", "register_link"]

_LINKS: weakref.WeakKeyDictionary[App, NetworkLink] = weakref.WeakKeyDictionary()


class _LinkedTransport:
    """One connection through a link; fails as soon as the link is cut."""

    def __init__(self, inner: Transport, link: NetworkLink) -> None:
        self._inner = inner
        self._link = link
        self._generation = link.generation

    def _check(self) -> None:
        if self._link.is_cut or self._link.generation != self._generation:
            raise TransportClosed("network partition")

    async def send(self, frame: Frame) -> None:
        self._check()
        await self._inner.send(frame)

    async def receive(self) -> Frame:
        self._check()
        with trio.CancelScope() as scope:
            self._link._receivers.add(scope)
            try:
                return await self._inner.receive()
            finally:
                self._link._receivers.discard(scope)
        raise TransportClosed("network partition")  # cut while waiting

    async def aclose(self) -> None:
        await self._inner.aclose()


class NetworkLink:
    """A transport factory that can be cut off and healed (see the module docstring).

    Attributes:
        is_cut: True while the link is cut.
        cuts: How many times it was cut.
        generation: Increases at every cut (connections of an older generation stay dead).
    """

    def __init__(self, inner: TransportFactory) -> None:
        self._inner = inner
        self.is_cut = False
        self.cuts = 0
        self.generation = 0
        self._receivers: set[trio.CancelScope] = set()

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Transport]:
        if self.is_cut:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("network partition: no route to the server")
        async with self._inner() as transport:
            yield _LinkedTransport(transport, self)

    def cut(self) -> None:
        """Fail every open connection and refuse new ones until ``heal``."""
        if not self.is_cut:
            self.is_cut = True
            self.cuts += 1
            self.generation += 1
        for scope in list(self._receivers):
            scope.cancel()

    def heal(self) -> None:
        """Let connections through again."""
        self.is_cut = False


def register_link(app: App, link: NetworkLink) -> None:
    """Remember that ``app`` syncs through ``link`` (``open_test_app`` does this)."""
    _LINKS[app] = link


def link_of(target: NetworkLink | App) -> NetworkLink:
    """The link itself, or the link an app opened by ``open_test_app`` syncs through."""
    if isinstance(target, NetworkLink):
        return target
    try:
        return _LINKS[target]
    except KeyError:
        raise ValueError(f"{target!r} was not opened by kora.testing (no network link)") from None


@contextmanager
def partition(*targets: NetworkLink | App) -> Iterator[None]:
    """Cut ``targets`` (links, or apps from ``open_test_app``) off the server for the
    duration of the ``with`` block, then heal them."""
    links = [link_of(target) for target in targets]
    for link in links:
        link.cut()
    try:
        yield
    finally:
        for link in links:
            link.heal()
