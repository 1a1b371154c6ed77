"""OpenAI audio API shapes: errors, language names and the transcription documents.

Kept apart from the router so the mapping from the contract's Job to OpenAI's
``json`` / ``text`` / ``verbose_json`` documents is plain, testable functions.
``verbose_json`` segments carry what whisper-operator has: id, start, end and
text as transcribed; ``seek`` is the segment start in 10 ms frames;
``avg_logprob`` is the mean natural log of the segment's word probabilities;
``compression_ratio`` is computed from the text as whisper does (bytes /
zlib-compressed bytes); ``temperature`` is the one the request asked for
(null when it asked for none: the server's setting applied, which a cluster
facade does not know);
``tokens`` is empty and ``no_speech_prob`` null (whisper.cpp's token ids and
no-speech probability are not kept in the stored result).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from fastapi.responses import JSONResponse

from whisperop.core.models import Job, Segment

LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean", "fr": "french",
    "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic",
    "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech", "ro": "romanian", "da": "danish",
    "hu": "hungarian", "ta": "tamil", "no": "norwegian", "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian",
    "lt": "lithuanian", "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu",
    "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian",
    "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic",
    "hy": "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")


class OpenAIError(Exception):
    """Answered as ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's error shape)."""

    def __init__(self, status_code: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.type, self.param, self.code = status_code, message, type_, param, code
        self.headers = headers


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status_code,
                        headers=exc.headers)


def full_text(job: Job) -> str:
    return " ".join(t for t in (" ".join(s.text.split()) for s in job.segments) if t)


def _avg_logprob(seg: Segment) -> float | None:
    probs = [w.probability for w in seg.words if w.probability > 0]
    return round(sum(math.log(p) for p in probs) / len(probs), 4) if probs else None


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def verbose_json(job: Job, task: str, granularities: list[str], temperature: float | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "task": task,
        "language": LANGUAGE_NAMES.get(job.language or "", job.language or ""),
        "duration": job.duration_secs or 0.0,
        "text": full_text(job),
    }
    if not granularities or "segment" in granularities:
        doc["segments"] = [
            {"id": i, "seek": int(round(s.start * 100)), "start": s.start, "end": s.end, "text": s.text,
             "tokens": [], "temperature": temperature, "avg_logprob": _avg_logprob(s),
             "compression_ratio": _compression_ratio(s.text), "no_speech_prob": None}
            for i, s in enumerate(job.segments)
        ]
    if "word" in granularities:
        doc["words"] = [{"word": w.text, "start": w.start, "end": w.end} for s in job.segments for w in s.words]
    return doc
