"""Check response bodies and stream chunks against the official OpenAI OpenAPI spec.

The spec (``fixtures/openai-openapi/openapi.yaml``, ~3 MB) is loaded once per process.
Its schemas are OpenAPI 3.x flavoured JSON Schema: ``$ref`` points into
``#/components/schemas``, and ``nullable: true`` (OpenAPI 3.0 style) appears in places;
both are handled here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from aiforge.testing.models import openai_openapi_spec

KNOWN_SCHEMAS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "ErrorResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
)


class SchemaMismatch(AssertionError):
    """A body does not conform to the named OpenAI schema."""


@functools.lru_cache(maxsize=4)
def _components(spec_path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with spec_path.open("rb") as stream:
        spec = yaml.load(stream, Loader=loader)
    schemas: dict[str, Any] = spec["components"]["schemas"]
    return {name: _nullable_to_null(schema) for name, schema in schemas.items()}


def _nullable_to_null(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable: true`` as JSON Schema's ``anyOf [..., null]``."""
    if isinstance(node, list):
        return [_nullable_to_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_null(value) for key, value in node.items()}
    if converted.pop("nullable", False):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.lru_cache(maxsize=32)
def _validator(schema_name: str, spec_path: Path) -> jsonschema.protocols.Validator:
    components = _components(spec_path)
    if schema_name not in components:
        raise KeyError(f"no schema {schema_name!r} in {spec_path}")
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": {"schemas": components},
        "$ref": f"#/components/schemas/{schema_name}",
    }
    cls = jsonschema.Draft202012Validator
    return cls(root)


def assert_conforms(schema_name: str, body: Any, *, spec_path: Path | None = None) -> None:
    """Raise :class:`SchemaMismatch` listing every violation of ``components/schemas/NAME``."""
    validator = _validator(schema_name, spec_path or openai_openapi_spec())
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in errors[:10]
        ]
        raise SchemaMismatch(
            f"body does not conform to OpenAI schema {schema_name} "
            f"({len(errors)} error(s)):\n" + "\n".join(lines)
        )
