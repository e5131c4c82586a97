"""transferkit: transfer learning for image folders — train, embed, visualise, search."""

__version__ = "0.1.0"
