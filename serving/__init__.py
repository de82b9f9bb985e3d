"""odh-serving's library: KServe reconciliation, model servers, storage, registry and platforms.

``serving`` never imports Prefect: flows and tasks call into it, never the other way round.
"""
