"""Alembic migrations, packaged with aiforge and run at start-up by ``upgrade_to_head``."""
