"""Labelling less and right: which images to label next (``suggest``)."""
