"""`python -m callmesh_sip_edge` starts the sip-edge service."""

from callmesh_sip_edge.app import main

main()
