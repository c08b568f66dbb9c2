-- The queue service's own state (ARCHITECTURE §2). Names are unqualified: the pool's
-- search_path puts the service schema first.
--
-- Ownership is per tenant ("shard"): the engine ranks callers across every queue that shares
-- an agent, and an agent belongs to one tenant, so all of a tenant's queues must live in one
-- engine on one replica. See services/queue/README.md ("Durability and ownership").

-- Queue definitions as the engine reads them (`core.snapshot.config_to_data`), plus the
-- adapter's own per-queue options (agent extensions, menu keys). `version` grows on every
-- change so an owner sees what changed with one cheap query.
CREATE TABLE queues (
    tenant_id   text NOT NULL,
    queue_id    text NOT NULL,
    config      jsonb NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}'::jsonb,
    version     bigint NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, queue_id)
);

-- One lease per tenant shard. Taken with UPDATE ... WHERE expires_at < now(), which bumps
-- `generation`; every durable write of the owner locks this row (FOR SHARE) and checks its
-- generation, so a replica that lost the lease can never write after the new owner has read.
CREATE TABLE leases (
    tenant_id      text PRIMARY KEY,
    owner          text NOT NULL DEFAULT '',
    owner_address  text NOT NULL DEFAULT '',
    generation     bigint NOT NULL DEFAULT 0,
    expires_at     timestamptz NOT NULL DEFAULT '-infinity'
);

-- The latest snapshot of a shard: the engine's plain-data export plus the adapter's records of
-- each wait, covering every journal entry up to and including `journal_seq`.
CREATE TABLE snapshots (
    tenant_id    text PRIMARY KEY,
    journal_seq  bigint NOT NULL,
    generation   bigint NOT NULL,
    state        jsonb NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now()
);

-- Every input the owner fed its engine after the snapshot, in order, with the `now` it used.
-- The engine is deterministic, so snapshot + replay of these rows rebuilds exactly the state
-- the owner had. A row commits before anything the input caused is told to anyone.
CREATE TABLE journal (
    tenant_id   text NOT NULL,
    seq         bigint NOT NULL,
    generation  bigint NOT NULL,
    op          jsonb NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);

-- Last `seq` handed out on leg "queue" of each call (CallEvent numbering, gap-free per leg).
CREATE TABLE call_event_seq (
    call_id     text PRIMARY KEY,
    last_seq    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox for callmesh.calls.v1 (the api's config_outbox pattern): the event
-- commits with the journal row that caused it; a relay publishes in id order and deletes.
CREATE TABLE call_event_outbox (
    id        bigserial PRIMARY KEY,
    call_id   text NOT NULL,
    event_id  text NOT NULL,
    payload   bytea NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
