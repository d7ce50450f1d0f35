"""One module per command, each with its `cmd_<name>(args) -> dict`, importing only what that
command needs (predict loads no Orbax or training loop). cli/dispatch.COMMANDS names them.

Imports: anything in the package.
"""
