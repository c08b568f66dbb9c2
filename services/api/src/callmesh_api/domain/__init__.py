"""The api's pure domain: resource models, credentials, roles. No I/O here."""
