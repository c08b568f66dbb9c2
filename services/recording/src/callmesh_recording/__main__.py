"""`python -m callmesh_recording` starts the recording service."""

from callmesh_recording.app import main

main()
