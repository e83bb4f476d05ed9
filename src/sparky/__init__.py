"""Sparky Memory: turn an exported AI chat history into a searchable long-term memory."""

__version__ = "0.1.0"
