"""IMDB movie reviews (Maas et al., ACL 2011) as token ids through `TextVectorization`.

`load_imdb(split)` yields `(token ids, label)` pairs: int64 ids of shape
`(sequence_length,)` (0 is padding, 1 the out-of-vocabulary token) and int64
labels (1 positive, 0 negative). The vocabulary is adapted on the training
split only, whatever `split` is loaded, after lower-casing, turning the HTML
line breaks `<br />` into spaces and removing punctuation (`standardize_review`).

Adapting reads the whole training split once (25,000 reviews: about 30 s of
one CPU core); the vocabulary is cached in the process per (source, folder,
vocabulary size, adapted reviews), so loading the test split after the
training split, or again, costs nothing. Pass the returned vectorizer as
`vectorizer=` to reuse it explicitly, and `adapt_limit=` to adapt on fewer
reviews.

Sources as for MNIST and CIFAR-10: `"local"` reads
`imdb_reviews-{split}.tfrecord.gz` (GZIP TFRecords of `tf.train.Example` with
bytes `text` and int64 `label`) from `data_dir` or `$KERAS_ATTREG_DATA`;
`"tfds"` loads `imdb_reviews` with `tensorflow_datasets`.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from keras_attreg._validation import check_int
from keras_attreg.datasets.loaders import (
    _check_sizes,
    _load_tfds,
    _local_file,
    _resolve,
)

_FEATURES = {
    "text": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
_PUNCTUATION = r"""[!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']"""
_SHUFFLE_BUFFER = 10_000
_VOCABULARIES: dict = {}


@keras.saving.register_keras_serializable(package="keras_attreg")
def standardize_review(text):
    """Lower-cases, turns `<br />` into a space and removes punctuation.

    Args:
        text: a string tensor.

    Returns:
        The standardised string tensor.

    Example:

    >>> standardize_review(tf.constant("Great!<br /><br />A 'must' see.")).numpy()
    b'great  a must see'
    """
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, "<br\\s*/?>", " ")
    return tf.strings.regex_replace(text, _PUNCTUATION, "")


def _raw_reviews(split, source, data_dir, limit):
    """(text, label) pairs of one split, as stored."""
    if source == "tfds":
        return _load_tfds("imdb_reviews", split, data_dir, limit)
    path = _local_file(data_dir, f"imdb_reviews-{split}.tfrecord.gz")
    dataset = tf.data.TFRecordDataset(str(path), compression_type="GZIP")
    if limit is not None:
        dataset = dataset.take(limit)

    def parse(record):
        example = tf.io.parse_single_example(record, _FEATURES)
        return example["text"], example["label"]

    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def _vectorizer(source, data_dir, vocabulary_size, sequence_length, adapt_limit):
    key = (source, str(data_dir), vocabulary_size, adapt_limit)
    layer = keras.layers.TextVectorization(
        max_tokens=vocabulary_size,
        standardize=standardize_review,
        output_sequence_length=sequence_length,
        name="imdb_vectorizer",
    )
    if key not in _VOCABULARIES:
        texts = _raw_reviews("train", source, data_dir, adapt_limit)
        layer.adapt(texts.map(lambda text, label: text).batch(1024))
        _VOCABULARIES[key] = layer.get_vocabulary()
    else:
        layer.set_vocabulary(_VOCABULARIES[key])
    return layer


def load_imdb(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    vocabulary_size: int = 20_000,
    sequence_length: int = 256,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    limit: int | None = None,
    source: str = "auto",
    vectorizer: keras.layers.TextVectorization | None = None,
    adapt_limit: int | None = None,
) -> tuple[tf.data.Dataset, keras.layers.TextVectorization]:
    """Loads IMDB reviews as token ids, with the vectorizer that made them.

    Args:
        split: `"train"` (25,000 reviews) or `"test"` (25,000).
        data_dir: folder holding `imdb_reviews-{split}.tfrecord.gz`
            (`source="local"`), or a `tensorflow_datasets` data folder
            (`source="tfds"`, no download). Defaults to `$KERAS_ATTREG_DATA`.
        vocabulary_size: the most frequent tokens kept (padding and the
            out-of-vocabulary token included).
        sequence_length: reviews are cut or padded (with 0) to this length.
        batch_size: if given, batch the dataset (last batch may be smaller).
        shuffle: shuffle the examples (again at each epoch).
        seed: shuffle seed.
        limit: keep only the first `limit` reviews of the split.
        source: `"auto"`, `"local"` or `"tfds"` (as `load_mnist`).
        vectorizer: an adapted `TextVectorization` to use (e.g. the one
            returned for the training split); then `vocabulary_size`,
            `sequence_length` and `adapt_limit` are not used.
        adapt_limit: adapt the vocabulary on the first `adapt_limit` training
            reviews only (default: all 25,000).

    Returns:
        `(dataset, vectorizer)`: a dataset of int64 token ids
        `(sequence_length,)` and int64 labels, and the `TextVectorization`
        layer (its `get_vocabulary()` maps ids to words; put it in front of a
        model to serve raw strings).

    Example:

    >>> ds, vectorizer = load_imdb("test", data_dir=data_dir, limit=4,
    ...                            adapt_limit=200, sequence_length=32)
    >>> ids, label = next(iter(ds))
    >>> ids.shape, ids.dtype.name, vectorizer.get_vocabulary()[:2]
    (TensorShape([32]), 'int64', ['', '[UNK]'])
    """
    source, data_dir = _resolve(split, data_dir, source, ("auto", "local", "tfds"))
    limit, batch_size, seed = _check_sizes(limit, batch_size, seed)
    if vectorizer is None:
        vectorizer = _vectorizer(
            source,
            data_dir,
            check_int("vocabulary_size", vocabulary_size, low=3),
            check_int("sequence_length", sequence_length, low=1),
            None
            if adapt_limit is None
            else check_int("adapt_limit", adapt_limit, low=1),
        )
    elif not isinstance(vectorizer, keras.layers.TextVectorization):
        raise ValueError(
            "Invalid value for argument vectorizer: expected an adapted "
            f"`keras.layers.TextVectorization`. Received: vectorizer={vectorizer!r}"
        )
    dataset = _raw_reviews(split, source, data_dir, limit)
    if shuffle:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed)
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda text, label: (vectorizer(text), tf.cast(label, tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE), vectorizer
