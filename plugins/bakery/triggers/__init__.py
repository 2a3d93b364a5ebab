"""Airflow triggers of the bakery (deferred waits that hold no worker slot); thin adapters like the
operators: the waiting itself is core code (``bakery.targets.azure.replication``)."""
