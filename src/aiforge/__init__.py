"""aiforge: a self-hosted, full-stack AI service."""

__version__ = "0.1.0"

__all__ = ["__version__"]
