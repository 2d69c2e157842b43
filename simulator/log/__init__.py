"""The observable log, the truth store apart from it, and the training view built from the log."""
