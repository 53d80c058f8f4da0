"""The OpenRouter source: the client that captures a UTC day, and a local emulator of the API."""
