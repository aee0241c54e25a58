"""Security: envelope encryption of secrets and tokens (crypto), the SSRF guard (netguard) and its policy from the
settings (policy). May import core/ only; netguard imports nothing of the service but the one error class, since the
consumer client's copy of it is generated from its source.
"""
