"""Image folders: the layout parser, hardened decoding, datasets and loaders."""
