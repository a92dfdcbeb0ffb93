"""``python -m conformance.hddt``: runs the suite (see ``run.main``)."""

import sys

from conformance.hddt.run import main

sys.exit(main())
