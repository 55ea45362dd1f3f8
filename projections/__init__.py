"""Consumers of the event topics that build the MySQL and Redis read models."""
