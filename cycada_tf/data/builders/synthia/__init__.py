"""The `synthia_fall` and `synthia_winter` TFDS datasets (see synthia_dataset_builder.py)."""
