"""Command-line plumbing shared by every entry point: config flags, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

from tqdm.auto import tqdm

from trainers.config import GRAPHS_ENV, PRECISION_ENV, TrainConfig
from trainers.errors import DataWarning, ToxituneError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STRAY_THREAD_GRACE_SECONDS = 2.0


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type = TrainConfig,
    *,
    exclude: tuple[str, ...] = (),
    choices: Mapping[str, tuple[str, ...]] | None = None,
    required: tuple[str, ...] = (),
    namespace: str = "",
) -> None:
    """Add one flag per setting of the settings class ``cls`` (see :mod:`trainers.settings`), nested ones included.

    Flags default to "not given", so :func:`config_overrides` returns only what the user typed.

    Args:
        parser: Where the flags go.
        cls: The settings class.
        exclude: Setting paths (``"seed"``, ``"teacher.epochs"``) that get no flag.
        choices: Narrower choices for some settings, by path.
        required: Setting paths the user must give.
        namespace: Prefix of the flags' destinations, so two classes can share one parser.
    """
    for path, flag, field, hint in _config_fields(cls):
        if path in exclude:
            continue
        kwargs: dict[str, Any] = {
            "dest": namespace + path,
            "default": argparse.SUPPRESS,
            "help": field.metadata.get("help"),
            "required": path in required,
        }
        parse, allowed = _parser_for(hint)
        allowed = (choices or {}).get(path, allowed)
        if allowed:
            kwargs["choices"] = allowed
        else:
            kwargs["type"] = parse
            kwargs["metavar"] = _metavar(hint)
        default = field.default if field.default is not dataclasses.MISSING else None
        if default is not None and kwargs["help"] and path not in required:
            kwargs["help"] += f" (default: {_show(default)})"
        parser.add_argument(f"--{flag}", **kwargs)


def config_overrides(
    args: argparse.Namespace, cls: type = TrainConfig, *, namespace: str = ""
) -> dict[str, Any]:
    """The settings of ``cls`` given on the command line, as a nested dict in ``dataclasses.asdict`` form."""
    overrides: dict[str, Any] = {}
    for path, *_ in _config_fields(cls):
        if hasattr(args, namespace + path):
            *parents, name = path.split(".")
            target = overrides
            for parent in parents:
                target = target.setdefault(parent, {})
            target[name] = getattr(args, namespace + path)
    return overrides


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default settings if ``None``) with the command line's settings applied."""
    # Defaults that depend on the method (the learning rate) must be resolved for the chosen one.
    base_dict = (base or TrainConfig(method=getattr(args, "method", "even"))).to_dict()
    return TrainConfig.from_dict(merge(base_dict, config_overrides(args)))


def quiet_libraries() -> None:
    """Silence what transformers and the hub print on every load, in this process and its children.

    Set through their environment variables, read when they are first imported, so that commands
    which never load a model (``--help``, an argument error, an export) do not import them at all.
    """
    # Load reports ("classifier.weight MISSING") are expected here: heads are new by design.
    # Hub retry warnings would bury the one-line error that follows them.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside transformers and peft


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Run a ``main(argv) -> exit code``; user errors print one line and exit 2, Ctrl-C exits 130."""
    quiet_libraries()
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGINT, _interrupt)
    try:
        if PRECISION_ENV in os.environ or GRAPHS_ENV in os.environ:
            # A bad value fails here, once, not in every trial. Imported only then: it loads torch, which
            # commands that train nothing (search.export) do not need at start-up.
            from trainers.device import cuda_graphs, mixed_precision

            mixed_precision()
            cuda_graphs()
        code = main(None)
    except ToxituneError as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        for bar in list(tqdm._instances):  # a bar left open would carry the message on its line
            bar.close()
        print("interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        _exit_despite_stray_threads(EXIT_INTERRUPTED)
    sys.exit(code)


def _exit_despite_stray_threads(code: int) -> NoReturn:
    """Exit with ``code`` even when a Ctrl-C stranded a library's worker thread.

    Ctrl-C can land after a library started a non-daemon thread and before the ``with`` that stops it
    took over: Optuna starts a trial's heartbeat thread in ``HeartbeatThread.__enter__``, so a Ctrl-C
    there leaves it beating, and Python waits for it at exit forever. Threads that end within a moment
    are waited for; past that, what was printed is flushed and ``os._exit`` leaves the rest behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C while waiting ends the process at once
    deadline = time.monotonic() + STRAY_THREAD_GRACE_SECONDS
    for thread in _foreground_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    if _foreground_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _foreground_threads() -> list[threading.Thread]:
    """The live threads other than this one that Python would wait for at exit."""
    return [
        thread
        for thread in threading.enumerate()
        if thread is not threading.current_thread() and not thread.daemon and thread.is_alive()
    ]


_interrupted = False


def _interrupt(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed in a command started by :func:`run_main`.

    Python swallows a KeyboardInterrupt raised inside a ``__del__`` (garbage collection between two
    trials, say); long loops call this between steps so such a Ctrl-C still stops the command.
    """
    if _interrupted:
        raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print toxitune's own warnings as one line; others as Python does."""
    if issubclass(category, DataWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _config_fields(cls: type, prefix: str = "", path: str = ""):
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if not field.metadata.get("cli", True):
            continue
        if dataclasses.is_dataclass(hint):
            yield from _config_fields(hint, prefix + field.metadata.get("prefix", ""), f"{path}{field.name}.")
            continue
        flag = field.metadata.get("flag") or prefix + field.name.replace("_", "-")
        yield path + field.name, flag, field, hint


def _parser_for(hint: Any) -> tuple[Callable[[str], Any], tuple[Any, ...] | None]:
    origin = get_origin(hint)
    if origin is Literal:
        return str, get_args(hint)
    if origin in (Union, types.UnionType):
        inner = next(arg for arg in get_args(hint) if arg is not type(None))
        parse, allowed = _parser_for(inner)
        if allowed:
            return parse, allowed

        def parse_optional(text: str) -> Any:
            return None if text.lower() == "none" else parse(text)

        parse_optional.__name__ = parse.__name__  # argparse names the type in "invalid float value"
        return parse_optional, None
    if origin is tuple:
        return (lambda text: tuple(part.strip() for part in text.split(",") if part.strip())), None
    return hint, None


def _metavar(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _metavar(next(arg for arg in get_args(hint) if arg is not type(None)))
    if origin is tuple:
        return "A,B,..."
    return {int: "N", float: "X", str: "TEXT", Path: "DIR"}.get(hint, "VALUE")


def _show(value: Any) -> str:
    return (
        ",".join(value)
        if isinstance(value, tuple)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
