"""The REST API: route definitions (routes.py) and the resolver they run in (http.py)."""
