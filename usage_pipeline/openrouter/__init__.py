"""The OpenRouter source: the client that captures a UTC day, and OpenRouter's own counts of it. The API's local
emulator is a separate distribution, `openrouter-emulator/`, sharing no code with this."""
