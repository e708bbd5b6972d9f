"""Processing pipelines: per-event reduction steps, then batching."""
