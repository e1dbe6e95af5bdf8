"""Data: the Oxford-IIIT Pet reader and its synthetic stand-in, image decoding, the decoded-image cache, the two
input pipelines, and the LightningDataModules."""

CACHE_DIR = ".cache"  # in each dataset's folder: the decoded-image cache, and what prepared it
