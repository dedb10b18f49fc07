"""What the user reads: command summaries and tables as lines (`text`), the report image (`plots`), and the layer
and backbone listings (`inspect`)."""
