"""Storage/search backends (installed as ``csr_adapter.integrations``).

Each backend module imports its optional dependency lazily and names the extra to install.
"""
