"""The B2BUA: call sessions that join an incoming leg to the legs routing asks for.

- ``legs``: one class per dialog state per role (UAS states of the caller's leg, UAC states of
  each dialled leg); a leg turns SIP into typed events (Try, Ring, Connect, Disconnect, Fail)
  for its controller and takes commands (ring, answer, reject, cancel, hang up) from it.
- ``session``: the call controller joining the legs and executing routing's verbs.
- ``verbs``: the verb classes (answer, dial, play, hangup) in a registry.
- ``events``: call lifecycle events into the ``call_outbox`` (relayed to callmesh.calls.v1).
- ``manager``: the transaction user side: which leg a SIP event belongs to, authentication of
  INVITEs, trunks by source address, drain.
"""
