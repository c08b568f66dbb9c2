"""Errors the engine raises for events that cannot apply to its state.

Races that are normal on a phone network (an agent answering an offer that was just
withdrawn, a caller hanging up as they are connected) are not errors: the engine answers
those with a `False` return value and, where something must be undone, an action.
"""

from __future__ import annotations


class QueueCoreError(Exception):
    pass


class UnknownQueue(QueueCoreError, KeyError):
    pass


class UnknownAgent(QueueCoreError, KeyError):
    pass


class DuplicateCall(QueueCoreError, ValueError):
    pass


class InvalidTransition(QueueCoreError, ValueError):
    pass


class BadSnapshot(QueueCoreError, ValueError):
    pass
