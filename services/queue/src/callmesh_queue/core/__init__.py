"""The queue service's sans-I/O ACD core: queues, agents, strategies, wait estimates,
callbacks that keep the caller's place, live figures and snapshot/restore.

Events and `now` go in, actions and timer deadlines come out; the gRPC and PostgreSQL
adapters live outside this package. See `engine.py` for the rules the engine follows.
"""

from callmesh_queue.core.actions import (
    Action,
    AgentStateChanged,
    ApologizeAndOfferVoicemail,
    CallbackRegistered,
    CancelOffer,
    CancelReason,
    ConnectCaller,
    DialCustomer,
    GiveUpReason,
    OfferCall,
    OverflowCall,
    PlayAnnouncement,
)
from callmesh_queue.core.engine import JoinResult, QueueEngine
from callmesh_queue.core.errors import (
    BadSnapshot,
    DuplicateCall,
    InvalidTransition,
    QueueCoreError,
    UnknownAgent,
    UnknownQueue,
)
from callmesh_queue.core.handle_time import HandleTimeHistory, estimate_wait
from callmesh_queue.core.model import (
    AgentStatus,
    EntryKind,
    NoAnswerPolicy,
    OverflowKind,
    OverflowReason,
    OverflowTarget,
    QueueConfig,
    QueueMember,
    RingMode,
)
from callmesh_queue.core.stats import QueueCounters, QueueFigures
from callmesh_queue.core.strategies import (
    CallerOrdering,
    Candidate,
    DistributionStrategy,
    Registry,
    RingPlan,
    SelectionContext,
    builtin_orderings,
    builtin_strategies,
)

__all__ = [
    "Action",
    "AgentStateChanged",
    "AgentStatus",
    "ApologizeAndOfferVoicemail",
    "BadSnapshot",
    "CallbackRegistered",
    "CallerOrdering",
    "CancelOffer",
    "CancelReason",
    "Candidate",
    "ConnectCaller",
    "DialCustomer",
    "DistributionStrategy",
    "DuplicateCall",
    "EntryKind",
    "GiveUpReason",
    "HandleTimeHistory",
    "InvalidTransition",
    "JoinResult",
    "NoAnswerPolicy",
    "OfferCall",
    "OverflowCall",
    "OverflowKind",
    "OverflowReason",
    "OverflowTarget",
    "PlayAnnouncement",
    "QueueConfig",
    "QueueCoreError",
    "QueueCounters",
    "QueueEngine",
    "QueueFigures",
    "QueueMember",
    "Registry",
    "RingMode",
    "RingPlan",
    "SelectionContext",
    "UnknownAgent",
    "UnknownQueue",
    "builtin_orderings",
    "builtin_strategies",
    "estimate_wait",
]
