"""callmesh_media."""
