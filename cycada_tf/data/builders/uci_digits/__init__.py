"""The `uci_digits` TFDS dataset (see uci_digits_dataset_builder.py)."""
