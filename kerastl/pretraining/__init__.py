"""Step 1: supervised pre-training, its sources (synthetic, folders, TFDS, corpora) and execution."""
