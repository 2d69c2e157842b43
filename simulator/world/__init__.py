"""The world's ground truth (private): state, relevance, traffic, the user model and dynamics."""
