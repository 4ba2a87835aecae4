"""What comes in: the one image decoder, datasets and pairs files, shipped word lists, and the demo data."""
