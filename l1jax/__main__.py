import sys

from l1jax.cli import main

sys.exit(main())
