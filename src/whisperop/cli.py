"""``whisperop`` command line: transcribe files, manage models, run components.

Sub-commands register themselves from their own modules so this file stays a
dispatcher: ``transcribe`` and ``model`` live here because they only need the
engine; ``serve`` and ``worker`` are added by the facade and worker packages.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from whisperop.core.errors import WhisperOpError
from whisperop.core.languages import UnknownLanguageError, normalize_language
from whisperop.core.logs import setup_logging
from whisperop.core.settings import EngineSettings
from whisperop.modelstore.cache import CATALOG, DEFAULT_MODEL, cached_model_path, fetch_model, resolve_model


class _Bars:
    """tqdm bars for the download/extract/convert stages of a model fetch."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=f"model {stage}", unit="step", leave=True, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def _model_path(name: str, settings: EngineSettings) -> Path:
    return resolve_model(name, settings.model_cache_dir, fetch_missing=True, progress=_Bars())


def cmd_transcribe(args: argparse.Namespace) -> int:
    from whisperop.core.models import Task
    from whisperop.inference.engine import Progress, TranscribeRequest, create_engine
    from whisperop.inference.writers import render

    settings = EngineSettings()
    try:
        language = normalize_language(args.language)
    except UnknownLanguageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_path = _model_path(args.model, settings)
    overrides = {"beam_size": args.beam_size} if args.beam_size else {}
    if args.threads:
        overrides["threads"] = args.threads
    engine = create_engine(model_path, settings.model_copy(update=overrides))
    bar: tqdm | None = None

    def on_decoded(duration: float, chunks: int) -> None:
        nonlocal bar
        bar = tqdm(total=chunks, desc="transcribing", unit="chunk", file=sys.stderr, disable=args.quiet)

    def on_progress(p: Progress) -> None:
        if bar is not None:
            bar.update(p.chunk - bar.n)

    started = time.perf_counter()
    try:
        result = engine.transcribe_file(
            args.file, TranscribeRequest(language=language, task=Task(args.task)), on_progress=on_progress, on_decoded=on_decoded
        )
    finally:
        if bar is not None:
            bar.close()
        engine.close()
    wall = time.perf_counter() - started
    text = render(result, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    speed = result.duration_secs / wall if wall > 0 else 0.0
    print(
        f"{Path(args.file).name}: {result.duration_secs:.1f} s of audio ({result.language or 'unknown'}), "
        f"{len(result.segments)} segments in {result.chunks} chunks, {wall:.1f} s wall, {speed:.1f}x real time",
        file=sys.stderr,
    )
    return 0


def cmd_model_fetch(args: argparse.Namespace) -> int:
    settings = EngineSettings()
    path = fetch_model(args.name, settings.model_cache_dir, progress=_Bars(), force=args.force)
    print(path)
    return 0


def cmd_model_import(args: argparse.Namespace) -> int:
    from whisperop.modelstore.convert import convert_ct2_dir

    bar = tqdm(desc="converting", unit="tensor", file=sys.stderr)

    def progress(i: int, n: int) -> None:
        bar.total = n
        bar.update(i - bar.n)

    out = convert_ct2_dir(args.directory, args.output, args.precision, progress=progress)
    bar.close()
    print(out)
    return 0


def cmd_model_tiny(args: argparse.Namespace) -> int:
    from whisperop.modelstore.tiny import build_tiny_model

    print(build_tiny_model(args.output, args.precision))
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    settings = EngineSettings()
    for name, src in CATALOG.items():
        path = cached_model_path(name, settings.model_cache_dir)
        state = str(path) if path.exists() else "(not fetched)"
        default = " [default]" if name == DEFAULT_MODEL else ""
        print(f"{name:12s} {src.precision:5s} {state}{default}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisperop", description="whisper-operator: transcription with whisper.cpp, locally or on Kubernetes")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (env LOG_LEVEL)")
    parser.add_argument("--log-format", default=None, choices=["text", "json"], help="env LOG_FORMAT")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe an audio file")
    t.add_argument("file")
    t.add_argument("--model", default=DEFAULT_MODEL, help=f"catalog name ({', '.join(CATALOG)}) or path to a GGML file")
    t.add_argument("--language", default=None, help="ISO 639-1 code; omit or 'auto' to detect")
    t.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    t.add_argument("--format", default="txt", choices=["json", "srt", "vtt", "txt"])
    t.add_argument("--beam-size", type=int, default=None, help="1 = greedy (default from BEAM_SIZE)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_transcribe)

    m = sub.add_parser("model", help="fetch, convert and list models").add_subparsers(dest="model_command", required=True)
    f = m.add_parser("fetch", help="download and convert a catalog model into the cache")
    f.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=list(CATALOG))
    f.add_argument("--force", action="store_true")
    f.set_defaults(func=cmd_model_fetch)
    i = m.add_parser("import-ct2", help="convert a CTranslate2 whisper directory to GGML")
    i.add_argument("directory")
    i.add_argument("-o", "--output", required=True)
    i.add_argument("--precision", default="f16", choices=["f32", "f16", "q8_0"])
    i.set_defaults(func=cmd_model_import)
    tiny = m.add_parser("tiny", help="write a tiny random-weight model (tests only)")
    tiny.add_argument("-o", "--output", required=True)
    tiny.add_argument("--precision", default="f16", choices=["f32", "f16", "q8_0"])
    tiny.set_defaults(func=cmd_model_tiny)
    ls = m.add_parser("list", help="catalog and cache contents")
    ls.set_defaults(func=cmd_model_list)

    for register in _plugins():
        register(sub)
    return parser


# top-level modules of the "engine" extra (pyproject.toml)
ENGINE_MODULES = frozenset({"numpy", "av", "pywhispercpp", "_pywhispercpp"})


def _plugins() -> list:
    """Sub-commands contributed by the facade (``serve``), the worker (``worker``) and the operator
    (``operator cleanup|kwok-workers``). The three modules import only the standard library at the
    top (their dependencies load when the command runs, where a missing extra is reported by
    :func:`main`), so they are always importable."""
    from whisperop.api import cli as api_cli
    from whisperop.inference import worker_cli
    from whisperop.operator import cli as operator_cli

    return [api_cli.register, worker_cli.register, operator_cli.register]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except WhisperOpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name not in ENGINE_MODULES:
            raise
        # the operator image installs no engine (docs/images.md): say what is missing
        print(f"error: {args.command} needs the transcription engine ({exc.name} is not installed): "
              "pip install 'whisper-operator[engine]', or use the inference image", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
