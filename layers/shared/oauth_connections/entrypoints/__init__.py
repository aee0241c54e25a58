"""Entry points: every Lambda boundary and nothing else: the HTTP API (http/), GetToken, CallApi, the refresh jobs and the
feed jobs. Each parses its event, calls one feature function and maps the outcome; functions/<name>/app.py wire into
these. May import every other subpackage; nothing imports entrypoints/.
"""
