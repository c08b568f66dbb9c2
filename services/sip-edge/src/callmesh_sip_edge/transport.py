"""asyncio adapters around the sans-I/O SIP core: UDP and TCP listeners, one transaction layer.

One :class:`SipEndpoint` per replica owns the :class:`~.sip.transaction.TransactionLayer`, a UDP
socket and a TCP server on the same address and port, and a single timer task woken for
``layer.next_timer()``. Every input (datagram, framed stream message, timer) ends in
:meth:`SipEndpoint.flush`, which sends what the layer queued and hands its events to the
transaction user (registrar, B2BUA).

Response routing (RFC 3261 18.2.2, RFC 3581): a request over TCP is answered on its connection;
over UDP, a request whose top Via has ``rport`` is answered to the address and port it came
from (symmetric, what phones behind NAT need); otherwise to the ``received`` address (the
source address) and the port in the Via (5060 by default). Unparseable requests are answered
to their source with the core's ``build_error_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from callmesh_core.logging import EventLogger

from .sip.errors import SipParseError, TransactionError
from .sip.message import SipRequest, SipResponse, build_response, new_tag
from .sip.parser import StreamFramer, build_error_response, parse_message
from .sip.transaction import (
    Destination,
    Outgoing,
    ServerTransaction,
    TransactionEvent,
    TransactionLayer,
)

EventHandler = Callable[[TransactionEvent], None]
DEFAULT_SIP_PORT = 5060
# How long a TCP connection whose stream cannot be framed stays open for pending answers.
STREAM_ERROR_LINGER = 2.0


def response_destination(request: SipRequest, source: Destination) -> Destination:
    """Where responses to ``request`` received from ``source`` go (see the module docstring)."""
    if source.reliable:
        return source
    via = request.top_via
    if via.wants_rport:
        return source
    return Destination(source.transport, source.host, via.port or DEFAULT_SIP_PORT)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._endpoint.receive(data, Destination("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier datagram: nothing to do, timers handle it.
        self._endpoint.log.debug("udp_error", error=repr(exc))


class _TcpConnection(asyncio.Protocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self._endpoint = endpoint
        self._framer = StreamFramer(endpoint.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Destination | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Destination("TCP", str(host), int(port))
        self._endpoint._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None and self.peer is not None
        frames = self._framer.feed(data)
        for message in frames.messages:
            self._endpoint.receive(message, self.peer)
        if frames.keepalive_pings:
            self.transport.write(b"\r\n" * frames.keepalive_pings)  # RFC 5626 pong
        if frames.error is not None:
            answer = build_error_response(frames.error.head, frames.error)
            if answer:
                self.transport.write(answer)
            self._endpoint.log.info(
                "sip_stream_error",
                peer=f"{self.peer.host}:{self.peer.port}",
                reason=frames.error.reason,
            )
            # Stop reading, but let answers still being worked out for the messages framed
            # before the error (a REGISTER waits for the directory) go out before closing.
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(STREAM_ERROR_LINGER, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self._endpoint._connections.get(self.peer) is self:
            del self._endpoint._connections[self.peer]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SipEndpoint:
    """UDP + TCP on one address, feeding one transaction layer."""

    def __init__(
        self,
        layer: TransactionLayer,
        *,
        log: EventLogger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layer = layer
        self.log = log
        self.limits = layer._limits
        self._clock = clock
        self._handler: EventHandler | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[Destination, _TcpConnection] = {}
        self._timer_task: asyncio.Task[None] | None = None
        self._timer_changed = asyncio.Event()
        self._scheduled: float | None = None
        self._flush_scheduled = False
        self.host = ""
        self.port = 0
        self.received = 0
        self.malformed = 0

    def set_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    def now(self) -> float:
        return self._clock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen on UDP and TCP ``host:port`` (port 0: a free port for both); the port."""
        loop = asyncio.get_running_loop()
        for _attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            bound = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await loop.create_server(
                    lambda: _TcpConnection(self), host, bound, reuse_address=True
                )
            except OSError:
                udp.close()
                if port != 0:
                    raise
                continue  # the free UDP port is taken on TCP: try another
            self._udp = udp
            sock = udp.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            break
        else:
            raise OSError(f"no port free for both UDP and TCP on {host}")
        self.host, self.port = host, bound
        self._timer_task = asyncio.create_task(self._run_timers(), name="sip-timers")
        self.log.info("sip_listening", host=host, port=bound, transports="udp,tcp")
        return bound

    async def stop(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        if self._tcp is not None:
            self._tcp.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        if self._udp is not None:
            self._udp.close()
            self._udp = None  # late sends (a call's last BYE) are dropped, not errors

    # -- input -----------------------------------------------------------------------------

    def receive(self, data: bytes, source: Destination) -> None:
        """One datagram or framed stream message; never raises."""
        self.received += 1
        try:
            self._receive(data, source)
        except Exception:
            # A bug must cost one message, never the process (or the other calls).
            self.log.exception("sip_receive_failed", source=f"{source.host}:{source.port}")
        self.flush()

    def _receive(self, data: bytes, source: Destination) -> None:
        if not source.reliable and not data.strip(b"\r\n"):
            return  # UDP keepalive (CRLF or empty datagram)
        try:
            message = parse_message(data, stream=source.reliable, limits=self.limits)
        except SipParseError as error:
            self.malformed += 1
            answer = build_error_response(data, error)
            self.log.info(
                "sip_malformed",
                source=f"{source.transport.lower()}:{source.host}:{source.port}",
                reason=error.reason,
                answered=answer is not None,
            )
            if answer is not None:
                self.send(answer, source)
            return
        if isinstance(message, SipResponse):
            self.layer.receive(message, source, self.now())
            return
        self.layer.receive(message, response_destination(message, source), self.now())

    # -- output ----------------------------------------------------------------------------

    def respond(self, transaction: ServerTransaction, response: SipResponse) -> None:
        """Answer a server transaction; a transaction that already ended is left alone."""
        try:
            self.layer.send_response(transaction, response, self.now())
        except TransactionError:
            return  # the transaction ended meanwhile (transport error)
        self.flush_soon()

    def reject(
        self,
        transaction: ServerTransaction,
        code: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer with a final status built from the transaction's request."""
        self.respond(
            transaction,
            build_response(
                transaction.request, code, reason, to_tag=new_tag(), headers=headers or []
            ),
        )

    def flush_soon(self) -> None:
        """Flush after the current callback. Responses and requests are queued from inside
        the flush loop (event handlers) and from tasks alike; one deferred flush covers both
        without re-entering the dispatcher."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send what the layer queued, hand its events up, and re-arm the timer."""
        layer = self.layer
        handler = self._handler
        for _round in range(1000):  # handlers may queue more; stop a runaway loop
            for outgoing in layer.messages_to_send():
                self._send_outgoing(outgoing)
            event = layer.next_event()
            if event is None:
                break
            if handler is not None:
                try:
                    handler(event)
                except Exception:
                    self.log.exception("sip_handler_failed", kind=type(event).__name__)
        deadline = layer.next_timer()
        if deadline != self._scheduled:
            self._timer_changed.set()

    def _send_outgoing(self, outgoing: Outgoing) -> None:
        self.send(outgoing.data, outgoing.destination)

    def send(self, data: bytes, destination: Destination) -> None:
        if destination.reliable:
            connection = self._connections.get(destination)
            if connection is None:
                # The connection is gone (RFC 3261 18.2.2 would open a new one to the Via;
                # phones behind NAT cannot accept it, so it is dropped and the client retries).
                self.log.info(
                    "sip_no_connection", destination=f"{destination.host}:{destination.port}"
                )
                return
            connection.write(data)
            return
        if self._udp is None:
            return
        try:
            self._udp.sendto(data, (destination.host, destination.port))
        except (OSError, ValueError) as exc:
            self.log.info(
                "sip_send_failed",
                destination=f"{destination.host}:{destination.port}",
                error=repr(exc),
            )

    # -- timers ----------------------------------------------------------------------------

    async def _run_timers(self) -> None:
        layer = self.layer
        while True:
            self._timer_changed.clear()
            deadline = layer.next_timer()
            self._scheduled = deadline
            if deadline is None:
                await self._timer_changed.wait()
                continue
            delay = deadline - self.now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._timer_changed.wait(), delay)
                if self._timer_changed.is_set():
                    continue
            try:
                layer.handle_timer(self.now())
            except Exception:
                self.log.exception("sip_timer_failed")
            self.flush()

    @property
    def connection_count(self) -> int:
        return len(self._connections)
