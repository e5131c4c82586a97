"""The self-contained HTML run report."""
