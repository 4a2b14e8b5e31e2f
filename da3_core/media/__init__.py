"""Uploads in: images, videos and bundled examples to validated frames (`inputs`), and known
cameras read, checked and matched to frames (`cameras`). Pure, parent side, no torch."""
