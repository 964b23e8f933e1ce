"""The ``/admin/v1`` API: routers, dependencies and the OpenAI error envelope."""
