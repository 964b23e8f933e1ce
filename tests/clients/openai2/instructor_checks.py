"""instructor (``instructor.from_openai``) against aiforge: a pydantic ``response_model`` in
``JSON_SCHEMA`` and ``TOOLS`` modes, and a streamed ``Partial`` model."""

from __future__ import annotations

import instructor
from check_runner import NO_THINKING, STRUCTURED_MAX_TOKENS, Forecast, Target, run
from openai import OpenAI


def client(target: Target, mode: instructor.Mode) -> instructor.Instructor:
    openai = OpenAI(base_url=target.base_url, api_key=target.api_key, max_retries=0)
    return instructor.from_openai(openai, mode=mode)


def extract(target: Target, mode: instructor.Mode) -> None:
    forecast = client(target, mode).chat.completions.create(
        model=target.chat_model,
        response_model=Forecast,
        messages=[{"role": "user", "content": "Will it rain in Paris?"}],
        max_tokens=STRUCTURED_MAX_TOKENS,
        max_retries=0,
        extra_body=NO_THINKING,
    )
    assert isinstance(forecast, Forecast), forecast


def streamed_partial(target: Target) -> None:
    partials = list(
        client(target, instructor.Mode.JSON_SCHEMA).chat.completions.create_partial(
            model=target.chat_model,
            response_model=Forecast,
            messages=[{"role": "user", "content": "Will it rain in Paris?"}],
            max_tokens=STRUCTURED_MAX_TOKENS,
            max_retries=0,
            extra_body=NO_THINKING,
        )
    )
    assert len(partials) > 1, partials
    Forecast.model_validate(partials[-1].model_dump())


run(
    {
        "json_schema": lambda t: extract(t, instructor.Mode.JSON_SCHEMA),
        "tools": lambda t: extract(t, instructor.Mode.TOOLS),
        "streamed_partial": streamed_partial,
    }
)
