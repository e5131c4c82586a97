"""Transfer strategies as small objects with hooks and state, and ``auto``."""
