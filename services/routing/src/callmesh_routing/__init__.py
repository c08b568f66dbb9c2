"""callmesh_routing."""
