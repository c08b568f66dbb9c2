"""callmesh_notify."""
