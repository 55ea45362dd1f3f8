"""Settings, service plumbing (Kafka, MySQL, Redis), serialization and the CLI."""
