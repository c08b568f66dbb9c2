"""callmesh_crm_sync."""
