"""Data: dataset readers, the synthetic Oxford-layout generator, transforms and LightningDataModules."""
