"""``python -m gomodel_proxy`` and the ``gomodel-proxy`` command (and each ``--workers`` process, which
imports this module first).

structlog imports ``rich`` at import time when it is installed (it is, beside the test tools), for pretty
tracebacks the gateway never renders: keeping it out of the gateway's processes saves about a tenth of the
start-up time and 5 MB. Only here, in processes that are the gateway and nothing else.
"""

import sys

sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


def run() -> int:
    """The gateway process's entry point."""
    from gomodel_proxy.cli import main  # noqa: PLC0415 - after rich is kept out

    return main()


if __name__ == "__main__":
    sys.exit(run())
