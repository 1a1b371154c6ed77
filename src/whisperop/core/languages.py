"""Language codes whisper accepts (ISO 639-1, plus whisper's few 3-letter ones).

``auto`` and an omitted language both mean "detect and transcribe": the
original server passed ``auto`` through as if it were a code (a recorded
pitfall), so it is normalised here, at the edge.
"""

from __future__ import annotations

WHISPER_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)
_KNOWN = frozenset(WHISPER_LANGUAGES)


class UnknownLanguageError(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(f"unknown language '{code}'; accepted: auto, {', '.join(WHISPER_LANGUAGES)}")
        self.code = code


def normalize_language(value: str | None) -> str | None:
    """Return a whisper language code, or ``None`` for auto-detection."""
    if value is None:
        return None
    code = value.strip().lower()
    if code in ("", "auto"):
        return None
    if code not in _KNOWN:
        raise UnknownLanguageError(value)
    return code
