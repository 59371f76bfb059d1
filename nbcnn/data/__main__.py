"""``python -m nbcnn.data list|fetch NAME|verify NAME``."""

import sys

from .cli import main

sys.exit(main())
