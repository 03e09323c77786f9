"""Alembic migrations of the controller's schema; run them with :func:`controller.migrate.upgrade`."""
