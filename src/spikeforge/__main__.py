"""``python -m spikeforge`` runs the ``spikeforge`` command."""

import sys

from .cli.main import main

sys.exit(main())
