"""Root conftest: the real local PostgreSQL and Kafka fixtures for every test in the workspace."""

pytest_plugins = ["callmesh_devstack.pytest_plugin"]
