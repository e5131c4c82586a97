"""Dataset curation from embeddings: duplicates, train/val leakage, likely label errors, outliers.

The modules are imported on demand (``transferkit.find_label_issues`` and the other public
names resolve through ``transferkit.__init__``), so importing this package loads nothing heavy:

- ``source``: the rows to curate, from a store or an image folder embedded first.
- ``knn``: every row's nearest other rows, in blocks or through a faiss index (no N x N matrix).
- ``crossval``, ``confident``, ``label_issues``: out-of-fold probabilities from cross-validated
  heads, confident learning, and the label-issue report.
- ``outliers``: images far from everything and far from their own class.
- ``duplicates``, ``leakage``: exact and near duplicates, and val/test images that duplicate training ones.
- ``pages``, ``cards``: the offline HTML pages (inline thumbnails) and the JSON a report is written to.
"""
