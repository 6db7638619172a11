"""``python -m vireid`` (and ``torchrun -m vireid``) runs the command line."""
import sys

from .cli import main

sys.exit(main())
