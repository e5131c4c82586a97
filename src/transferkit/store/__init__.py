"""The embedding store (LanceDB), its approximate index, and search."""
