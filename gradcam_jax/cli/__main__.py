"""``python -m gradcam_jax.cli``."""

import sys

from gradcam_jax.cli.main import main

if __name__ == "__main__":  # importing this module (doctest collection) runs nothing
  sys.exit(main())
