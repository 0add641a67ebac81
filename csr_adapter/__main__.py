"""``python -m csr_adapter``."""

from .cli import main

main()
