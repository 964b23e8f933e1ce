"""Builders and fakes for testing aiforge and applications built on it."""
