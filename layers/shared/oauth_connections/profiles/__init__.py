"""Provider profiles: the catalog of common providers (catalog.json, checked against catalog.schema.json by the
tests) and how a profile and a tenant's config values become a connection's settings. May import core/ and
security/ only.
"""
