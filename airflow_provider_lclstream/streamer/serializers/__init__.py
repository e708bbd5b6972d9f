"""Serializers turn one batch (``dict[str, ndarray]``) into the bytes of one message."""
