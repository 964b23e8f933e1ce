"""OpenAI API wire models (requests, responses, stream chunks, errors)."""

from aiforge.protocol.openai.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from aiforge.protocol.openai.common import StreamOptions, Usage, make_usage
from aiforge.protocol.openai.completions import CompletionRequest, CompletionResponse
from aiforge.protocol.openai.embeddings import EmbeddingRequest, EmbeddingResponse
from aiforge.protocol.openai.errors import ErrorBody, ErrorResponse, OpenAIError
from aiforge.protocol.openai.models import ModelCard, ModelList

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "CompletionRequest",
    "CompletionResponse",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ErrorBody",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "OpenAIError",
    "StreamOptions",
    "Usage",
    "make_usage",
]
