"""Local infrastructure for development and tests: a real PostgreSQL cluster and a real
single-node KRaft Kafka broker under the repository's `.local/`, plus the `make run` supervisor.

Nothing here is used in production; services never import it.
"""
