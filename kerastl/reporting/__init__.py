"""What the user reads: the report image and the layer and backbone listings."""
