"""The parallel, event-driven executor: graph model, resource contract, per-vertex workers.

It imports neither `mgmt` nor `resources`: resources plug in through `engine.resource.register`.
"""

import sys

if sys.version_info < (3, 11, 3):  # Debian 12's python3 is 3.11.2
    from engine import timeoutfix

    timeoutfix.install()
