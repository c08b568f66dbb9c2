"""callmesh_devstack."""
