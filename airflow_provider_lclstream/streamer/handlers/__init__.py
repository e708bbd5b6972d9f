"""Data handlers: where serialized messages go (files, network streams)."""
