"""callmesh_api."""
