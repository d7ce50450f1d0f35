"""`python -m fashion_jax.cli`: the same as the `fashion-jax` command."""

import sys

from fashion_jax.cli import main

sys.exit(main())
