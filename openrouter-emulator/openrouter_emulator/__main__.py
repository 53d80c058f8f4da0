"""`python -m openrouter_emulator [flags]` serves the emulator (same flags as `openrouter-emulator --help`)."""

from openrouter_emulator.server import main

if __name__ == "__main__":
    main()
