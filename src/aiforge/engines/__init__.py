"""Inference engines: each runs one replica of a model behind the OpenAI API."""
