"""Request bodies described in the gateway's OpenAPI schema.

The gateway forwards ``/v1`` bodies byte for byte (the replica validates them), so its routes
take a raw :class:`~fastapi.Request` and FastAPI cannot see what they accept. Each route
names its body's protocol model with :func:`openapi_body`; :func:`with_body_schemas` puts
those models (and the models they refer to) into the schema's components, so clients,
documentation and the fuzzer (``tests/fuzz``) see every field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_REF = "#/components/schemas/{model}"
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def openapi_body(model: type[BaseModel], *, media_type: str = "application/json") -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose body is ``model`` (a required body)."""
    _BODY_MODELS[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def with_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an app's OpenAPI document) with every body model named by
    :func:`openapi_body` in ``components.schemas``."""
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in sorted(_BODY_MODELS.items()):
        described = model.model_json_schema(ref_template=_REF, mode="validation")
        for def_name, definition in described.pop("$defs", {}).items():
            components.setdefault(def_name, definition)
        components.setdefault(name, described)
    return schema
