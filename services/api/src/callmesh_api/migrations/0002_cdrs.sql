-- Call detail records, built from `callmesh.calls.v1` by the api's CDR consumer (cdr.py).
--
-- Three levels, each written in the same transaction as the raw event that changed it:
--   call_events  every event applied, once: the key (call_id, leg, seq) makes redelivery a no-op
--                and keeps the protobuf payload so CDRs can be rebuilt by replaying it;
--   call_legs    one row per leg ("a", "b1", ..., "queue") folded from its events;
--   cdrs         one row per call: what reports read.
-- Durations are integer milliseconds. No foreign keys to tenants/users: a CDR is a fact that
-- outlives configuration (a deleted user's calls still happened), and events may name a
-- tenant this replica has not seen yet.

CREATE TABLE call_events (
    call_id      uuid NOT NULL,
    leg          text NOT NULL,
    seq          bigint NOT NULL,
    event_id     text NOT NULL,
    tenant_id    uuid NOT NULL,
    kind         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    payload      bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, leg, seq)
);

CREATE TABLE call_legs (
    call_id              uuid NOT NULL,
    leg                  text NOT NULL,
    tenant_id            uuid NOT NULL,
    parent_leg           text,
    sip_call_id          text,
    direction            text,
    caller_number        text,
    callee_number        text,
    callee_extension     text,
    caller_user_id       uuid,
    callee_user_id       uuid,
    trunk_id             uuid,
    step_id              text,
    started_at           timestamptz,
    ringing_at           timestamptz,
    answered_at          timestamptz,
    ended_at             timestamptz,
    answered_by_user_id  uuid,
    answered_by_extension text,
    bridged_with_leg     text,
    outcome              text,
    cause                text,
    sip_status           integer,
    q850_cause           integer,
    hangup_side          text,
    ring_ms              bigint,
    talk_ms              bigint,
    total_ms             bigint,
    post_dial_delay_ms   bigint,
    mos                  double precision,
    queue_id             text,
    queue_result         text,
    queue_wait_ms        bigint,
    last_seq             bigint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, leg)
);

CREATE TABLE cdrs (
    call_id              uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL,
    direction            text NOT NULL DEFAULT 'unknown'
                         CHECK (direction IN ('inbound', 'outbound', 'internal', 'unknown')),
    caller_number        text NOT NULL DEFAULT '',
    caller_name          text NOT NULL DEFAULT '',
    -- National significant number of the caller ("8121234567" for "+78121234567"), so that a
    -- prefix such as 812 finds callers whatever their country code; '' when not a phone number.
    caller_national      text NOT NULL DEFAULT '',
    callee_number        text NOT NULL DEFAULT '',
    -- The outside party in E.164 (inbound: the caller, outbound: the callee; NULL for internal
    -- calls): what "called back" matches on.
    remote_number        text,
    did                  text,
    trunk_id             uuid,
    caller_user_id       uuid,
    caller_extension     text,
    started_at           timestamptz,
    answered_at          timestamptz,
    ended_at             timestamptz,
    -- 'answered', 'no_answer', 'busy', 'cancelled', 'rejected', 'failed', 'abandoned' (hung up
    -- while queued), or 'in_progress' until the "a" leg ends.
    outcome              text NOT NULL DEFAULT 'in_progress',
    cause                text,
    sip_status           integer,
    hangup_side          text,
    ring_ms              bigint,
    talk_ms              bigint,
    total_ms             bigint,
    post_dial_delay_ms   bigint,
    answered_by_user_id  uuid,
    answered_by_extension text,
    rang_extensions      text[] NOT NULL DEFAULT '{}',
    rang_user_ids        uuid[] NOT NULL DEFAULT '{}',
    -- Every tenant user the call touched (placed it, was rung, answered): role scopes and
    -- per-employee figures read this.
    party_user_ids       uuid[] NOT NULL DEFAULT '{}',
    queue_id             text,
    queue_result         text,
    queue_wait_ms        bigint,
    mos                  double precision,
    -- Inputs the outcome is derived from, kept so that a late event still derives it right.
    a_outcome            text,
    a_answered_at        timestamptz,
    b_answered_at        timestamptz,
    a_talk_ms            bigint,
    b_talk_ms            bigint,
    b_legs               integer NOT NULL DEFAULT 0,
    person_answered      boolean NOT NULL DEFAULT false,
    closed               boolean NOT NULL DEFAULT false,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Call list and every report: a tenant's calls in a period, newest first.
CREATE INDEX cdrs_tenant_started ON cdrs (tenant_id, started_at DESC, call_id DESC);
-- Missed calls and outcome filters.
CREATE INDEX cdrs_tenant_outcome_started ON cdrs (tenant_id, outcome, started_at);
CREATE INDEX cdrs_tenant_direction_started ON cdrs (tenant_id, direction, started_at);
-- Caller prefix / region ("812"), as presented and national.
CREATE INDEX cdrs_tenant_caller_prefix ON cdrs (tenant_id, caller_number text_pattern_ops);
CREATE INDEX cdrs_tenant_caller_national ON cdrs (tenant_id, caller_national text_pattern_ops);
-- "Called back?": later calls with the same outside party.
CREATE INDEX cdrs_tenant_remote_started ON cdrs (tenant_id, remote_number, started_at)
    WHERE remote_number IS NOT NULL;
-- Extension filter, role scopes, per-employee load.
CREATE INDEX cdrs_party_users ON cdrs USING gin (party_user_ids);
CREATE INDEX cdrs_rang_extensions ON cdrs USING gin (rang_extensions);
CREATE INDEX cdrs_tenant_answered_by ON cdrs (tenant_id, answered_by_user_id, started_at)
    WHERE answered_by_user_id IS NOT NULL;
