"""Connections: the connections API's models and editing rules (service), the authorization flow, token storage,
the single-flight refresh, when a refresh is due, the scheduled refresh and token retrieval. May import core/,
security/, oauth/ and storage/; never feeds/ or entrypoints/.
"""
