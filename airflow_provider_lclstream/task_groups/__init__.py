"""Task groups composing this provider's operators."""
