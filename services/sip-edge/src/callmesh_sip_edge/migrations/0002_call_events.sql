-- Call lifecycle events (callmesh.events.v1.CallEvent), published to callmesh.calls.v1 by the
-- outbox relay (callmesh_core.outbox) in id order, so each call's events keep their order.
CREATE TABLE call_outbox (
    id         bigserial PRIMARY KEY,
    event_key  text NOT NULL,
    event_id   text NOT NULL,
    -- A serialised callmesh.events.v1.CallEvent.
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
