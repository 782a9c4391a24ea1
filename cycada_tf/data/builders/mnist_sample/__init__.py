"""The `mnist_sample` TFDS dataset (see mnist_sample_dataset_builder.py)."""
