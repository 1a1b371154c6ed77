"""whisper-operator."""
