"""BitEx's local service runner: Kafka, MySQL and Redis for development and tests.

Stdlib only, so that `python -m infra.services up` runs before the virtualenv
exists. See runner.py for the rules (use what already listens, stop only what we
started) and one module per service.
"""
