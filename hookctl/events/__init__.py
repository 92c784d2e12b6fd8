"""Where events come from: reading files and stdin, and what identifies an event."""
