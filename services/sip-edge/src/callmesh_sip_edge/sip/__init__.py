"""Sans-I/O SIP core: messages, SDP, digest auth, transactions and dialogs.

Nothing in this package does I/O or reads a clock: bytes and ``now`` go in;
messages, bytes to send, timers and events come out.
"""
