"""``python -m csr_adapter.cli``."""

from . import main

main()
