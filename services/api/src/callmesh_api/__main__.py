"""`python -m callmesh_api` starts the api service."""

from callmesh_api.app import main

main()
