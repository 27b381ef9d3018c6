"""`python -m cnnxfer` (and `torchrun -m cnnxfer extract ...`): the `cnnxfer` command."""
import sys

from .cli import main

sys.exit(main())
