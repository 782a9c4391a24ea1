"""The `usps` TFDS dataset (see usps_dataset_builder.py)."""
