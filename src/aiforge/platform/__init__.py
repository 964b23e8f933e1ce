"""The platform layer: tenants, projects, users, API keys, limits and usage.

Layout: ``domain/`` holds pure rules (roles, key format, authorization), ``db/`` the
tables, engine and migrations, ``services/`` the operations and the in-memory key cache
the gateway authenticates from, ``api/`` the ``/admin/v1`` routers, and
:mod:`aiforge.platform.bootstrap` wires it all into a :class:`PlatformRuntime`.
"""
