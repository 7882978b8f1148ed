"""`python -m mgmt` and the `mgmt` command: `mgmt deploy` tries its thin path first
(`mgmt.deploy.client`: through the local agent, without importing the CLI), else the CLI."""

import os
import sys


def main() -> int:
    if sys.argv[1:2] == ["deploy"]:
        from mgmt.deploy.client import main as thin

        code = thin(sys.argv[2:])
        if code is not None:  # done: exit without the interpreter's teardown
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:
                return code  # let the interpreter say it
            os._exit(code)
    from mgmt.cli import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
