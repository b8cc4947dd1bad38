"""``python -m align ...`` is the ``align`` command; ``accelerate launch -m align train RECIPE`` launches it."""

import sys

from align.cli import main

sys.exit(main())
