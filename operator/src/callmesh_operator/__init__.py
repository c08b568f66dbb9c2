"""callmesh_operator."""
