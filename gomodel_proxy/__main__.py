"""``python -m gomodel_proxy``: the same as the ``gomodel-proxy`` command."""

import sys

from gomodel_proxy.cli import main

sys.exit(main())
