"""`python -m callmesh_media` starts the media service."""

from callmesh_media.app import main

main()
