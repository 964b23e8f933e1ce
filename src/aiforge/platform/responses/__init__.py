"""Stored Responses (``/v1/responses`` with ``store``) in the platform database.

``table`` holds the row, ``repository`` the queries, ``store`` the SQL implementation
(:class:`~aiforge.platform.responses.store.SqlResponseStore`) of the gateway's
:class:`~aiforge.gateway.responses.store.ResponseStore` port. Nothing is imported here, so
loading the table (migrations, :mod:`aiforge.platform.db.tables`) stays light.
"""
