"""Plain-Python pieces of a transfer: job specs for buffer, streamer and consumers; final stats."""
