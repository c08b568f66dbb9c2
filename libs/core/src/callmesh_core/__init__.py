"""callmesh_core."""
