"""Product feeds: the feeds API's models and service, dispatch of due runs, the fetch of a feed as a recorded run,
content formats and cron. May import connections/ and everything below it; never entrypoints/.
"""
