"""Core: the settings model, error types, ids, the clock, the caller, the cursor codec, views of records,
logging/metrics/tracing, the time budget of an invocation, AWS client configuration and event publishing:
what every feature uses. Imports nothing of the service outside core/.
"""
