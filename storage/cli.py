"""What every command line of the project shares (docs/cli.md).

Argument types that check a value when it is parsed (so a bad value is one
argparse line before any work starts), a help formatter that shows every
default, and :func:`run_cli`, which turns a user error raised later (a path
that is not a store, a missing group, a bad setting) into one ``error:`` line
and exit status 2 instead of a traceback. ``REID_PRIORS_DEBUG=1`` shows the
traceback anyway.

The module itself needs only the standard library (YAML is imported when a
``KEY=VALUE`` is parsed); the checks run inside argparse, before a command
imports its flows, torch or an estimator, so a mistyped path fails in well
under a second of CPU time.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

MAX_IMAGE_SIDE = 4096      # pixels: re-ID crops are ~128-384; larger is a typo (100000x100000 is 894 GiB per chunk)
MAX_DSAP_SIDE = 256        # DSA-reID uses S=32
MAX_UNIT_SIZE = 4096       # images per chunk


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of a multi-line description (wraps a one-line one)
    and appends ``(default: X)`` to every option whose help does not already
    state its default."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is argparse.SUPPRESS:
            return text
        if not action.option_strings or action.nargs == 0:  # positionals, store_true flags
            return text
        default = action.default
        if isinstance(default, (list, tuple)):
            if not default:
                return text
            default = " ".join(str(d) for d in default)
        return f"{text} (default: {default})"


def is_url(text: str) -> bool:
    return "://" in str(text)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _bounded_float(text: str, bound: str) -> float:
    """A finite number satisfying ``bound`` ("> 0" or ">= 0")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    ok = value > 0 if bound == "> 0" else value >= 0
    if not math.isfinite(value) or not ok:
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _bounded_float(text, "> 0")


def nonnegative_float(text: str) -> float:
    return _bounded_float(text, ">= 0")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = f"int {low}..{high}"
    return parse


def parse_hw(text: str, max_side: int = MAX_IMAGE_SIDE) -> tuple[int, int]:
    """``"256x128"`` -> (256, 128); each side 1..``max_side``."""
    match = re.fullmatch(r"\s*(-?\d+)\s*[xX]\s*(-?\d+)\s*", str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 256x128), got {text!r}")
    h, w = int(match.group(1)), int(match.group(2))
    if not (1 <= h <= max_side and 1 <= w <= max_side):
        raise argparse.ArgumentTypeError(f"size {h}x{w}: each side must be in 1..{max_side}")
    return h, w


def size_hw(text: str) -> str:
    """An ``HxW`` argument, checked, kept as text (the flows take ``"HxW"``)."""
    h, w = parse_hw(text)
    return f"{h}x{w}"


def device_name(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: where an estimator's model runs (checked
    before any model is built; ``auto`` is for training and evaluation only)."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", text.strip()):
        return text.strip()
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N")


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as YAML (``true``, ``3``, ``[20, 40]``, ``labeled``)."""
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import yaml

    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: value {value!r} is not valid YAML") from None
    return key.strip(), parsed


def existing_path(text: str) -> str:
    if not is_url(text) and not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def existing_file(text: str) -> str:
    if not is_url(text) and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file" if Path(text).exists() else f"{text} does not exist")
    return text


def existing_dir(text: str) -> str:
    if not is_url(text) and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder" if Path(text).exists() else f"{text} does not exist")
    return text


def store_path(text: str) -> str:
    """A store to read or add to: an existing store folder (or a URL, checked when opened)."""
    if is_url(text):
        return text
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist (create a store with `python -m pipelines ingest`)")
    if not p.is_dir() or not (p / "zarr.json").is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a store (no zarr.json); create one with `python -m pipelines ingest`")
    return str(p)


def new_store_path(text: str) -> str:
    """A store to create or resume: anything but an existing file."""
    if not is_url(text) and Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a store folder")
    return text


def absolute_store(text: str) -> str:
    """The store as recorded in a run: an absolute path, or the URL as given."""
    return str(text) if is_url(text) or not text else str(Path(text).resolve())


def hidden_alias(p, flag: str, dest: str, type: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
    """An old spelling of a flag: accepted, not shown in --help (docs/cli.md)."""
    p.add_argument(flag, dest=dest, type=type, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bars; only warnings, errors and the final summary") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=help)
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS,
                   default=argparse.SUPPRESS)


def refuse_unused_flags(args: argparse.Namespace, chosen: str | tuple[str, ...],
                        flags: dict[str, tuple[str, str | tuple[str, ...]]], defaults: dict[str, Any] | None = None) -> None:
    """One clear error for a backend-specific flag given with other backends.

    ``chosen``: the backend(s) of this command line (``"--estimator oracle"``, or one per kind:
    ``("--parsing pose", "--segmentation oracle")``); ``flags`` maps an argument's dest to (its flag,
    the backend or backends that use it). A flag counts as given when its value is neither ``None``
    nor its parser default in ``defaults`` (dest -> default): ``--device cpu`` with a CPU-only
    backend asks for what happens anyway, ``--device cuda`` would be silently ignored, so it is refused."""
    chosen = (chosen,) if isinstance(chosen, str) else tuple(chosen)
    defaults = defaults or {}
    for dest, (flag, backends) in flags.items():
        backends = (backends,) if isinstance(backends, str) else tuple(backends)
        value = getattr(args, dest, None)
        if value is None or (dest in defaults and value == defaults[dest]) or set(backends) & set(chosen):
            continue
        raise ValueError(f"{flag} applies only to {' or '.join(backends)}, not {' '.join(chosen)} (drop it)")


def configure_logging(quiet: bool) -> None:
    """INFO lines with time and module, or only warnings and errors with ``-q``."""
    import logging

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, LookupError, ImportError,
                                                RuntimeError, TypeError)


def user_error_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return f"error: {text}"


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)`` with user errors as one ``error:`` line on stderr (exit 2).

    Errors that are the program's fault still end in a traceback when
    ``REID_PRIORS_DEBUG`` is set; without it every failure is one line, since
    the commands' own checks name what to change."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("REID_PRIORS_DEBUG"):
            raise
        print(user_error_line(exc), file=sys.stderr)
        return 2
