-- The configuration of record: tenants, users/extensions, numbers, trunks, tokens, audit.
-- Every tenant-owned row carries tenant_id, and every query the api makes filters on it.
-- `version` increases on each change; it is the ETag of a resource and what caches compare.

CREATE TABLE tenants (
    id              uuid PRIMARY KEY,
    slug            text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name            text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    default_region  text NOT NULL DEFAULT 'RU',
    -- The SIP domain phones register to; it names the tenant at the edge and is the digest
    -- realm, so the same extension in two tenants never collides.
    sip_domain      text NOT NULL UNIQUE,
    language        text NOT NULL DEFAULT 'ru',
    -- The scenario for numbers without one, and the fallback when a scenario fails at run time.
    default_scenario_id uuid,
    max_channels    integer NOT NULL DEFAULT 0 CHECK (max_channels >= 0),
    enabled         boolean NOT NULL DEFAULT true,
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE departments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL,
    extension   text CHECK (extension ~ '^[0-9]{2,6}$'),
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE users (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name             text NOT NULL,
    email            text,
    role             text NOT NULL CHECK (role IN ('tenant_admin', 'supervisor', 'agent')),
    department_id    uuid REFERENCES departments(id) ON DELETE SET NULL,
    extension        text NOT NULL CHECK (extension ~ '^[0-9]{2,6}$'),
    -- SIP digest secrets are stored only as HA1 = H(username:realm:password), for MD5 and
    -- SHA-256 (RFC 7616/8760); the password itself is shown once at creation and never stored.
    sip_realm        text NOT NULL,
    sip_ha1_md5      text NOT NULL,
    sip_ha1_sha256   text NOT NULL,
    -- Web/API login password (argon2id); NULL means the user cannot log in to the cabinet.
    password_hash    text,
    mobile           text,
    permission_class text NOT NULL DEFAULT 'long_distance'
                     CHECK (permission_class IN ('internal', 'local', 'long_distance',
                                                 'international')),
    outbound_caller_id text,
    max_contacts     integer NOT NULL DEFAULT 0 CHECK (max_contacts >= 0),
    enabled          boolean NOT NULL DEFAULT true,
    version          bigint NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- The same extension may exist in two tenants, never twice in one.
    UNIQUE (tenant_id, extension)
);
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, lower(email)) WHERE email IS NOT NULL;

CREATE TABLE supervisor_departments (
    user_id        uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    department_id  uuid NOT NULL REFERENCES departments(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, department_id)
);

CREATE TABLE trunks (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            text NOT NULL,
    auth_mode       text NOT NULL CHECK (auth_mode IN ('ip', 'registration')),
    host            text NOT NULL,
    port            integer NOT NULL DEFAULT 5060 CHECK (port BETWEEN 1 AND 65535),
    transport       text NOT NULL DEFAULT 'udp' CHECK (transport IN ('udp', 'tcp')),
    source_addresses text[] NOT NULL DEFAULT '{}',
    username        text,
    -- Outbound registration needs the password itself; it is kept as a reference to a
    -- Kubernetes Secret (or, locally, in this column) and never returned by the API.
    secret          text,
    codecs          text[] NOT NULL DEFAULT '{PCMU,PCMA}',
    -- 0 = no limit (what the carrier contract says when it sets none).
    channel_limit   integer NOT NULL DEFAULT 30 CHECK (channel_limit >= 0),
    rate_table      jsonb NOT NULL DEFAULT '[]',
    -- Reference to the Secret that holds the registration password (operator-managed trunks).
    password_secret text,
    tech_prefix     text NOT NULL DEFAULT '' CHECK (tech_prefix ~ '^[0-9#*]*$'),
    send_e164       boolean NOT NULL DEFAULT true,
    enabled         boolean NOT NULL DEFAULT true,
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE numbers (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- A DID belongs to exactly one tenant platform-wide: an incoming call finds its tenant by it.
    e164         text NOT NULL UNIQUE CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    description  text NOT NULL DEFAULT '',
    scenario_id  uuid,
    trunk_id     uuid REFERENCES trunks(id) ON DELETE SET NULL,
    enabled      boolean NOT NULL DEFAULT true,
    version      bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    -- NULL tenant: a platform-admin token.
    tenant_id    uuid REFERENCES tenants(id) ON DELETE CASCADE,
    user_id      uuid REFERENCES users(id) ON DELETE CASCADE,
    role         text NOT NULL
                 CHECK (role IN ('platform_admin', 'tenant_admin', 'supervisor', 'agent')),
    name         text NOT NULL,
    -- SHA-256 of the token; the token is shown once.
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    CHECK ((role = 'platform_admin') = (tenant_id IS NULL))
);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid,
    actor        text NOT NULL,
    action       text NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    resource     text NOT NULL,
    resource_id  uuid NOT NULL,
    before       jsonb,
    after        jsonb,
    request_id   text,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at DESC);

-- Transactional outbox: a configuration change and its `callmesh.config.v1` event commit
-- together; a relay publishes and deletes rows, so a crash between the two loses no event.
CREATE TABLE config_outbox (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    actor        text NOT NULL,
    kind         text NOT NULL,
    resource_id  uuid NOT NULL,
    -- The id the contract uses: E.164 for numbers, the UUID otherwise.
    resource_key text NOT NULL,
    version      bigint NOT NULL,
    deleted      boolean NOT NULL DEFAULT false,
    at           timestamptz NOT NULL DEFAULT now()
);
