"""The `fashion-jax` command line: the parser and its flags (parser, config_flags), the dispatcher
that runs a command and turns its outcome into output and an exit status (dispatch), what several
commands share (inputs), and one module per command (commands/). `main` is the entry point.

Every command takes --json: its last stdout line is one JSON object. Bad input ends with one
`error: ...` line on stderr and exit status 2; a bug shows its traceback and exits 1.

Imports: anything in the package; `main` imports only the parser until a command runs, so
`--help` loads no JAX.
"""

from __future__ import annotations

import sys

from fashion_jax.cli.parser import CliError, build_parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    # Imported here, not at the top: it brings JAX, Flax and Orbax, which --help never needs.
    from fashion_jax.cli import dispatch

    return dispatch.run(args, argv)
