"""``python -m fastln {info,check,bench}``: see :mod:`fastln.cli`."""
import sys

from .cli import main

sys.exit(main())
