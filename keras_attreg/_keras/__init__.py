"""The one place that reads Keras internals (private attributes, `keras.src`).

Everything else in the package goes through the modules of this package:
`graph` (walking and running functional graphs, nested models included),
`distribute` (what `fit` needs under several workers), `steps` (train
functions compiled as Keras compiles its own) and `second_order`
(BatchNormalization and max pooling made exact and cheaper under double
backpropagation). A Keras release that
changes these internals breaks the tests of this package first.
"""
