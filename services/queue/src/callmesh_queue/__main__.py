"""`python -m callmesh_queue` starts the queue service."""

from callmesh_queue.app import main

main()
