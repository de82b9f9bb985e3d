"""One Prefect task per lifecycle phase; each is thin and calls one function of ``serving``."""
