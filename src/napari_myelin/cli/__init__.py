"""The ``napari-myelin`` command line: one command, one subcommand per action.

Each module of this package that does not start with ``_`` is a subcommand. It defines ``HELP``
(one line), ``add_arguments(parser)`` and ``run(args) -> int``; its name (``_`` read as ``-``,
a trailing ``_`` dropped: ``import_`` is ``import``) is the subcommand's name. :func:`main` turns
:class:`~napari_myelin.utils.errors.InputError` into one sentence on stderr and exit status 2, a cancel
(Ctrl-C) into status 130, and any other failure into a one-line internal-error message with status 1
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from .. import __version__
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import Cancelled


def _subcommands():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):  # a trailing _ avoids a Python keyword: import_ -> import
            yield info.name.rstrip("_").replace("_", "-"), importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-myelin",
        description="Integrated quantitative myelin MRI: MWF, DKI, QSM and QPM maps, registration to the "
        "MNI brain, CNN fusion and tract statistics. Run 'napari-myelin COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"napari-myelin {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _subcommands():
        text = module.HELP.replace("%", "%%")  # argparse formats help strings with %
        p = sub.add_parser(name, help=text, description=text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        print(f"napari-myelin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print(f"napari-myelin {args.command}: cancelled; no output was left half-written.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line unless --debug
        if args.debug:
            raise
        print(
            f"napari-myelin {args.command}: internal error ({type(exc).__name__}: {exc}); "
            "rerun with --debug and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
