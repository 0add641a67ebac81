"""The connection layer under the app: uvicorn's h11 protocol with a request-header deadline and a cap on open
connections, and the uvicorn settings ``csr-adapter serve`` (and :func:`~.testing.serve_in_thread`) run with.

uvicorn alone never closes a connection that sends a partial request head: its keep-alive timer only runs
after a response, and any byte received cancels it. Here every connection waiting for a request head (a new
one, or one kept alive after a response) must complete that head within ``header_timeout_s`` (408 and close if
it sent part of one, close if it sent nothing); an idle kept-alive connection closes after ``keep_alive_s``
(uvicorn's ``timeout_keep_alive``); past ``max_connections`` open connections a new one gets 503 and is closed
at once. The request body has its own deadline (``body_timeout_s``, :mod:`.middleware`).
"""

from __future__ import annotations

from typing import Any

HEAD_BYTES = 16 * 1024  # the most a request head may take (h11 answers 431 above)
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: 25\r\n\r\ntoo many open connections")
_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
              b"content-length: 38\r\n\r\nrequest head not received within time")


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type:
    """An ``H11Protocol`` subclass with the header deadline and the connection cap (see the module docstring)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None
        _head_bytes = False  # part of a request head arrived since the deadline was set

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(_REFUSED)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_bytes = False
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _waiting_for_head(self) -> bool:
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._waiting_for_head():
                return
            if self._head_bytes:
                self.transport.write(_TIMED_OUT)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self._head_bytes = self._head_bytes or bool(data)
            super().data_received(data)
            if not self._waiting_for_head():
                self._disarm()  # the head is complete: the body deadline and the app take over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request head (after keep-alive) has the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_options(config) -> dict[str, Any]:
    """uvicorn ``Config`` keyword arguments for a :class:`~.config.ServeConfig`."""
    return {"http": guarded_protocol(config.header_timeout_s, config.max_connections),
            "timeout_keep_alive": config.keep_alive_s, "h11_max_incomplete_event_size": HEAD_BYTES}
