"""Prompt builders, one module per stage. Each is a pure function from records to chat messages."""
