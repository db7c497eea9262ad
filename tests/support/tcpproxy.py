"""A small TCP proxy for fault tests: put it between a client and Redis, the database or a
provider, then cut every connection, refuse new ones, or delay the bytes in flight.

    with TcpProxy(("127.0.0.1", 6379)) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        ...
        proxy.cut()            # reset every open connection, keep accepting new ones
        proxy.refuse(True)     # new connections are closed at once (the service is "down")
        proxy.delay = 0.2      # each chunk forwarded after 200 ms
        proxy.limit(3, b"421 4.7.0 Too many connections\r\n")  # past 3 open: say so, close
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`, one thread per connection pair."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.delay = 0.0
        self._refusing = False
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="tcpproxy", daemon=True)
        self.accepted = 0
        self.max_open: int | None = None
        self.over_limit = b""
        self.peak_open = 0
        self.turned_away = 0

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, accepted connections are closed at once (and open ones are cut)."""
        self._refusing = refusing
        if refusing:
            self.cut()

    def limit(self, max_open: int | None, answer: bytes = b"") -> None:
        """Past `max_open` open connections, a new one gets `answer` and is closed (a server
        at its connection limit: SMTP's 421 greeting); None lifts the limit."""
        self.max_open, self.over_limit = max_open, answer

    def cut(self) -> None:
        """Reset every open connection (RST, as when a network path dies)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def close(self) -> None:
        self._stopping.set()
        self.cut()
        self._listener.close()
        if self._thread.is_alive():
            self._thread.join(2)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self._refusing:
                _reset(client)
                continue
            with self._lock:
                full = self.max_open is not None and len(self._pairs) >= self.max_open
            if full:
                self._turn_away(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.peak_open = max(self.peak_open, len(self._pairs))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _turn_away(self, client: socket.socket) -> None:
        self.turned_away += 1
        with contextlib.suppress(OSError):
            client.sendall(self.over_limit)
            client.shutdown(socket.SHUT_WR)
            client.settimeout(1)
            client.recv(_CHUNK)  # the client's QUIT, or its close
        with contextlib.suppress(OSError):
            client.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    if self.delay:
                        time.sleep(self.delay)
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (client, upstream):
                _reset(sock)
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # Now, not when the pump thread's select() lets go of the socket (up to 0.2 s later):
        # the peer sees the end of the connection at once, as after a real cut.
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        # SO_LINGER 0 makes close() send RST: the peer sees a dead connection, not a clean EOF.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()
