"""callmesh_recording."""
