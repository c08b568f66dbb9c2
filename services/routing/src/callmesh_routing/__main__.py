"""`python -m callmesh_routing` starts the routing service."""

from callmesh_routing.app import main

main()
