"""Image data layer: decoding, datasets, splits, download and synthetic scenes."""
