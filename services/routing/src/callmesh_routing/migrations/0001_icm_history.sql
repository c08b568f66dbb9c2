-- ICM history: who last talked with which outside number, per tenant (issue 5, ICM).
--
-- Built from callmesh.calls.v1. A call's events arrive in order (keyed by call id), but the
-- fact "employee X talked with number N" needs two of them: the "a" leg's attempt (who the
-- outside party is) and an answer. `icm_calls` holds the first until the call ends;
-- `icm_contacts` keeps one row per answer, keyed by the answering event's (call_id, leg, seq)
-- so a redelivered event changes nothing.

CREATE TABLE icm_calls (
    call_id            text PRIMARY KEY,
    tenant_id          text NOT NULL,
    -- CALL_DIRECTION_* number of the "a" leg (1 inbound, 2 outbound).
    direction          smallint NOT NULL,
    -- The outside party in E.164; empty until known (outbound calls learn it from a b-leg).
    external_number    text NOT NULL DEFAULT '',
    -- Outbound: the tenant user who placed the call.
    employee_user_id   text NOT NULL DEFAULT '',
    employee_extension text NOT NULL DEFAULT '',
    started_at         timestamptz NOT NULL
);

CREATE TABLE icm_contacts (
    call_id            text NOT NULL,
    leg                text NOT NULL,
    seq                bigint NOT NULL,
    tenant_id          text NOT NULL,
    external_number    text NOT NULL,
    employee_user_id   text NOT NULL,
    employee_extension text NOT NULL,
    talked_at          timestamptz NOT NULL,
    PRIMARY KEY (call_id, leg, seq)
);

-- The ICM lookup: the most recent conversations of one caller within a tenant.
CREATE INDEX icm_contacts_by_caller
    ON icm_contacts (tenant_id, external_number, talked_at DESC);
