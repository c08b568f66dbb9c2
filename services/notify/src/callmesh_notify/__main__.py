"""`python -m callmesh_notify` starts the notify service."""

from callmesh_notify.app import main

main()
