"""Figures, as Matplotlib Figure objects (no pyplot): samples, learning curves, filters, feature
maps, the confusion matrix (plots).

Imports: everything below it, up to inference/.
"""
