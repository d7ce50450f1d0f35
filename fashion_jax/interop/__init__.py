"""Keras files: reading .keras and .h5 without Keras (keras_h5) and mapping Keras models and
layouts to ours and back (keras_io).

Imports: the top level, runtime/ and model/.
"""
