"""The query gateway: answers reads from the MySQL and Redis read models only."""
