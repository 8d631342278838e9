import sys

from glide_jax.cli import main

sys.exit(main())
