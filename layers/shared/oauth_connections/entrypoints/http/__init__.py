"""The HTTP API: the resolver with error mapping, caller identity and limits (resolver), route scopes for the
OpenAPI document (access), the routes every resource collection shares (collection), one router module per
resource (connections, feeds), the browser's side of the authorization flow (browser) and the OpenAPI
document (openapi, served as openapi_build made it at build time). Part of entrypoints/.
"""
