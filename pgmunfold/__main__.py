"""``python -m pgmunfold``: a small demo, or a subcommand (``infer``) when one is given."""

from __future__ import annotations

import sys

from pgmunfold.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
