"""`python -m callmesh_crm_sync` starts the crm-sync service."""

from callmesh_crm_sync.app import main

main()
