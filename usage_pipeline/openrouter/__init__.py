"""The OpenRouter source: the client that captures a UTC day, and OpenRouter's own counts of it.

The local emulator of the API is a separate distribution, `openrouter-emulator/`, sharing no code with this.
"""
