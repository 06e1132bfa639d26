"""`python -m deployally`: the same as the `deployally` command (the git hooks use it)."""

from deployally.cli import main

main()
