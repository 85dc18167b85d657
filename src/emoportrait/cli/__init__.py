"""The `emoportrait` command: one verb per part of the system.

Each verb lives in `emoportrait/cli/<verb>.py` with `add_parser(subparsers)` (which sets
`func`) and keeps its heavy imports inside the function it runs, so `--help` stays instant.
A verb fails with `EMOError`: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys

from emoportrait.errors import EMOError

VERBS = ("init", "generate", "synth", "preprocess", "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoportrait",
        description="EMO (Emote Portrait Alive): audio-driven talking/singing portrait video diffusion.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print library logs and warnings")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="{" + ",".join(VERBS) + "}")
    for verb in VERBS:
        if importlib.util.find_spec(f"emoportrait.cli.{verb}") is None:
            continue  # a verb whose module is not installed (partial checkouts during development)
        importlib.import_module(f"emoportrait.cli.{verb}").add_parser(sub)
    return parser


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Verbs that take config overrides (`--key=value`, DESIGN's run-settings convention) declare
    # `set_defaults(accepts_overrides=True)`; those unknown options are handed to them as
    # `args.overrides`, anything else is a usage error.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not getattr(args, "accepts_overrides", False) or any(not u.startswith("--") or "=" not in u for u in unknown):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = list(getattr(args, "overrides", None) or []) + unknown
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GLOG_minloglevel", "2")
        # Read by diffusers/transformers when they are first imported (they reset logger levels then).
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        logging.getLogger().setLevel(logging.ERROR)
        for name in ("diffusers", "transformers", "accelerate"):
            logging.getLogger(name).setLevel(logging.ERROR)
    # SIGTERM behaves like Ctrl-C, so every atomic write cleans up its temporary file.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = args.func(args)
    except EMOError as e:
        print(f"emoportrait {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emoportrait {args.verb}: interrupted; no partial output was left", file=sys.stderr)
        return 130
    return int(result or 0)
