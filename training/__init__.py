"""CSRv2 training and evaluation (installed as ``csr_adapter.training``)."""
