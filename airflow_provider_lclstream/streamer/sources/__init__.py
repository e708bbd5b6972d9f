"""Event sources (where events come from) and data sources (what is read from each event)."""
