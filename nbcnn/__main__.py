"""``python -m nbcnn`` is the ``nbcnn`` command."""

import sys

from .cli import main

sys.exit(main())
