"""aiforge's OpenAI replica server: the HTTP face of a :class:`~aiforge.engines.core.TokenEngine`.

Everything OpenAI-shaped lives here (chat templates, tool-call and reasoning parsing,
stop strings, ``n``, detokenisation, logprobs, grammars); the engine only samples tokens.
"""
