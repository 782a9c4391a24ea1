"""The `gta5` TFDS dataset (see gta5_dataset_builder.py)."""
