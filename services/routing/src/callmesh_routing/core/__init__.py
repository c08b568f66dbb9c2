"""Routing's pure decision core: no I/O, no clock reads, no protobuf.

Everything here takes data and `now` in and returns data out, so the gRPC servicer and the
Kafka consumer (written later) stay thin adapters mapping these dataclasses to the contracts.
"""
