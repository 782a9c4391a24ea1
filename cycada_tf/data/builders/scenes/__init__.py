"""The `scenes_synthetic` and `scenes_real` TFDS datasets (see scenes_dataset_builder.py)."""
