"""Sans-I/O SIP core: messages, SDP, digest auth, transactions and dialogs.

Nothing in this package does I/O or reads a clock: bytes and ``now`` go in;
messages, bytes to send, timers and events come out. The asyncio adapters
drive it like this:

UDP datagram from ``(host, port)``::

    layer.receive_data(data, Destination("UDP", host, port), now)

TCP bytes on a connection (one :class:`~.parser.StreamFramer` per connection)::

    frames = framer.feed(data)
    for message in frames.messages:
        layer.receive_data(message, Destination("TCP", host, port), now)
    write(b"\\r\\n" * frames.keepalive_pings)          # RFC 5626 pong
    if frames.error:                                  # cannot frame any further
        write(build_error_response(frames.error.head, frames.error) or b"")
        close()

After every input, and when ``layer.next_timer()`` is reached
(``layer.handle_timer(now)``): send every ``layer.messages_to_send()`` item to
its ``destination`` and hand every ``layer.next_event()`` to the transaction
user (registrar, B2BUA), which answers with ``layer.send_response`` and sends
with ``layer.send_request`` / ``layer.send_stateless``.

Modules: ``parser`` (parse_message, StreamFramer, build_error_response),
``message`` (SipRequest, SipResponse, build_response), ``headers``/``uri``
(typed header values), ``validation`` (check_request: 405/416/420/...),
``sdp`` (parse_sdp, answer_offer, create_offer), ``digest``
(DigestAuthenticator, build_authorization), ``transaction``
(TransactionLayer), ``dialog`` (Dialog). The only exceptions the parsers
raise are in ``errors``.
"""
