-- The location service: every registered contact, shared by all sip-edge replicas.
CREATE TABLE registrations (
    tenant_id        text NOT NULL,
    extension        text NOT NULL,
    contact_uri      text NOT NULL,
    user_id          text NOT NULL,
    instance_id      text NOT NULL DEFAULT '',
    q                real,
    call_id          text NOT NULL,
    cseq             bigint NOT NULL,
    expires_at       timestamptz NOT NULL,
    source_transport text NOT NULL,
    source_host      text NOT NULL,
    source_port      integer NOT NULL,
    user_agent       text NOT NULL DEFAULT '',
    -- Replica that took the REGISTER (TCP contacts are reachable through its connection).
    replica          text NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, extension, contact_uri)
);

-- The expiry sweep reads the soonest expiries first.
CREATE INDEX registrations_expires_at ON registrations (expires_at);

-- Presence events written in the same transaction as the location change they describe, and
-- published to callmesh.presence.v1 by the outbox relay (callmesh_core.outbox).
CREATE TABLE presence_outbox (
    id         bigserial PRIMARY KEY,
    event_key  text NOT NULL,
    event_id   text NOT NULL,
    -- A serialised callmesh.events.v1.PresenceEvent.
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
