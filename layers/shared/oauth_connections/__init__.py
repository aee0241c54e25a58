"""Domain package of the OAuth2 connection service, shared by every function through the SharedLayer.

One subpackage per concern, each importing only downward (an import-linter contract in pyproject.toml checks it):
entrypoints/ > feeds/ > connections/ > oauth/ | storage/ > security/ > core/.
"""
