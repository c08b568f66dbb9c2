"""Symmetric RTP with bounded address learning (protection against "RTP bleed").

Policy, and why:

* The remote RTP address is learned only from packets whose source **IP equals the signalled
  IP** (the SDP ``c=`` address, after the edge's NAT fix-up has replaced a private ``c=`` address
  with the address the SIP request came from). The **port may differ**: NAT boxes rewrite source
  ports, which is the whole reason to learn at all, while they do not change the public IP a
  phone's SIP and RTP leave from.
* Learning happens only during a short window that opens with the first packet from the
  signalled IP and closes after ``max_packets`` such packets or ``window_seconds``, whichever
  comes first. Inside the window the address follows the latest packet (a NAT binding may
  still settle); outside it the address is locked. RTP bleed attacks send packets to a live
  port hoping the relay re-learns their address; after the window nobody can move the stream.
* Packets from any other source are dropped and counted, inside or outside the window.
* A new offer/answer (``resignal``) re-opens the window for the new ``c=`` address.
"""

from __future__ import annotations

from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LearningPolicy:
    max_packets: int = 10
    window_seconds: float = 3.0


class RemoteAddressLearner:
    def __init__(self, signalled: Address, policy: LearningPolicy | None = None) -> None:
        self.policy = policy or LearningPolicy()
        self.signalled = signalled
        self.remote: Address = signalled  # send to the signalled address until we learn
        self.learned = False
        self.dropped_packets = 0
        self._window_opened_at: float | None = None
        self._packets_in_window = 0
        self._locked = False

    @property
    def locked(self) -> bool:
        return self._locked

    def resignal(self, signalled: Address) -> None:
        self.signalled = signalled
        self.remote = signalled
        self.learned = False
        self._window_opened_at = None
        self._packets_in_window = 0
        self._locked = False

    def matches(self, source: Address) -> bool:
        """Whether ``source`` is the far end, without learning from it (for RTCP)."""
        return source == self.remote if self.learned else source[0] == self.signalled[0]

    def accept(self, source: Address, now: float) -> bool:
        """Decide whether a packet from ``source`` belongs to this leg; learn if allowed."""
        if self._locked or self._window_closed(now):
            self._locked = True
            if source == self.remote:
                return True
            self.dropped_packets += 1
            return False
        if source[0] != self.signalled[0]:
            self.dropped_packets += 1
            return False
        if self._window_opened_at is None:
            self._window_opened_at = now
        self._packets_in_window += 1
        self.remote = source
        self.learned = True
        if self._packets_in_window >= self.policy.max_packets:
            self._locked = True
        return True

    def _window_closed(self, now: float) -> bool:
        return (
            self._window_opened_at is not None
            and now - self._window_opened_at >= self.policy.window_seconds
        )
