"""The one place that reads Keras internals (private attributes, `keras.src`).

Everything else in the package goes through the modules of this package:
`graph` (walking and running functional graphs, nested models included) and
`distribute` (what `fit` needs under several workers). A Keras release that
changes these internals breaks the tests of this package first.
"""
