"""Domain package of the OAuth2 connection service, shared by every function through the SharedLayer."""
