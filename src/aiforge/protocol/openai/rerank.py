"""``/v1/rerank`` and ``/v1/score``: request and response bodies.

Not OpenAI endpoints: the shapes are the ones vLLM and Xinference serve, so the clients
written for them work unchanged.

* **rerank** is Jina's and Cohere's: ``query``, ``documents`` (strings, or objects with a
  ``text``), ``top_n`` (absent or 0: every document), ``return_documents`` (default true,
  as vLLM answers) → ``results`` sorted by ``relevance_score``, best first, each with the
  document's ``index`` in the request.
* **score** is vLLM's: ``text_1`` and ``text_2`` (or their newer names ``queries`` and
  ``documents``), each a string or a list of strings, paired one to many (``text_1`` a
  single string) or one to one (two lists of the same length) → ``data[i].score`` for pair
  ``i``.

Both take ``instruction`` (Qwen3-Reranker's ``<Instruct>``; vLLM's field of that name).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from aiforge.protocol.openai.common import Bool, Int, RequestModel, ResponseModel

__all__ = [
    "MAX_DOCUMENTS",
    "RerankDocument",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "ScoreData",
    "ScoreRequest",
    "ScoreResponse",
    "ScoreUsage",
]

MAX_DOCUMENTS = 1000
"""Documents (or pairs) in one request, Cohere's recommended ceiling."""


class RerankDocument(RequestModel):
    """A document given as an object (Cohere v1, Jina): only its ``text`` is ranked."""

    text: str


_Text = str
_Documents = Annotated[list[_Text | RerankDocument], Field(max_length=MAX_DOCUMENTS)]
_Texts = _Text | Annotated[list[_Text], Field(max_length=MAX_DOCUMENTS)]


class RerankRequest(RequestModel):
    model: str
    query: str
    documents: _Documents
    top_n: Int | None = Field(default=None, ge=0)
    """How many results to return, best first; absent or 0: all of them."""
    return_documents: Bool = True
    instruction: str | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        """Each document's text, in request order."""
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ScoreRequest(RequestModel):
    model: str
    text_1: _Texts | None = None
    text_2: _Texts | None = None
    queries: _Texts | None = None
    """vLLM's newer name for ``text_1``."""
    documents: _Texts | None = None
    """vLLM's newer name for ``text_2``."""
    instruction: str | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _both_sides(self) -> ScoreRequest:
        if self._left() is None or self._right() is None:
            raise ValueError("give text_1 and text_2 (or queries and documents)")
        return self

    def _left(self) -> str | list[str] | None:
        return self.text_1 if self.text_1 is not None else self.queries

    def _right(self) -> str | list[str] | None:
        return self.text_2 if self.text_2 is not None else self.documents

    def field_names(self) -> tuple[str, str]:
        """The names the request used for its two sides (for error messages)."""
        return (
            "text_1" if self.text_1 is not None else "queries",
            "text_2" if self.text_2 is not None else "documents",
        )

    def pairs(self) -> tuple[list[str], list[str]]:
        """``(left, right)`` as lists; the caller checks how they pair."""
        left, right = self._left(), self._right()
        assert left is not None  # the validator made sure
        assert right is not None
        return ([left] if isinstance(left, str) else list(left),
                [right] if isinstance(right, str) else list(right))  # fmt: skip


class RerankResultDocument(ResponseModel):
    text: str


class RerankResult(ResponseModel):
    index: int
    relevance_score: float
    document: RerankResultDocument | None = None


class ScoreUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(ResponseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: ScoreUsage


class ScoreData(ResponseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(ResponseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: ScoreUsage
