"""callmesh_queue."""
