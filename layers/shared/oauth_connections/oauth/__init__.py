"""The OAuth2 client: token endpoint requests and the quirks of providers' answers, discovery of an issuer's
metadata, revocation. Speaks to providers only through the SSRF guard; may import core/ and security/, never storage/
or a feature.
"""
