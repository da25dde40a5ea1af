"""Database layer: the connection pool, migrations, and the embedded PostgreSQL."""
