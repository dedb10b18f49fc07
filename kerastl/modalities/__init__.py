"""Input types: image, audio and text, each in its own module."""
