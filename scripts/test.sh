#!/usr/bin/env bash
# The project's test command (README, .ci/run): the whole suite on the newest
# supported TensorFlow/Keras, then the graph, relevance and annotation-mask tests
# (the parts that touch Keras internals) on the oldest supported pins
# (setup.cfg: tensorflow>=2.18, keras>=3.8), each in its own venv; there the
# ResNet50 mixed-precision tests are left out (they pin float16/bfloat16
# numerics of a large model, not Keras internals, and cost minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e ".[test]"
.venv/bin/python -m pytest -q
python3 -m venv .venv-oldest
.venv-oldest/bin/pip install -q -e ".[test]" "tensorflow==2.18.1" "keras==3.8.0" "protobuf<6"
.venv-oldest/bin/python -m pytest -q -p no:cacheprovider -k "not resnet50" \
    tests/test_relevance.py tests/test_relevance_graph.py tests/test_relevance_text.py \
    tests/test_relevance_recurrent.py tests/test_relevance_attention.py \
    tests/test_relevance_preprocessing.py tests/test_relevance_subclassed.py \
    tests/test_fbi.py \
    tests/test_attributions.py \
    tests/test_masks.py
