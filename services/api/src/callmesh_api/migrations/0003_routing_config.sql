-- Each tenant's routing configuration: the document routing interprets (scenarios, directory,
-- schedules, lists, masks, ring groups, rate tables). The api stores it as the configuration
-- of record; routing validates it on save (Routing.ValidateConfig) and reads it through
-- Provisioning.GetRoutingConfig, cached and invalidated by callmesh.config.v1.
CREATE TABLE routing_configs (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL UNIQUE REFERENCES tenants(id) ON DELETE CASCADE,
    document    jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
