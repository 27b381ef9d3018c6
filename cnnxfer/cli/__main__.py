"""`python -m cnnxfer.cli`: the same as the `cnnxfer` command."""
import sys

from . import main

sys.exit(main())
