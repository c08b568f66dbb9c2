"""callmesh_sip_edge."""
