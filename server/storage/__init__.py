"""Storage: SQLAlchemy 2 models, the database handle, repositories and Alembic migrations."""
