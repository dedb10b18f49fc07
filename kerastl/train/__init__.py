"""Step 2: the new output layer, which weights train, fine-tuning, resuming and evaluation."""
