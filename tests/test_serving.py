"""Served explanations: what TF Serving executes, checked from outside the package.

The SavedModels are written here and run in a fresh Python process by
`tf.saved_model.load` alone (no `keras_attreg` import there), each signature
called by name with and without a target, at two batch sizes. Their maps are
compared with the package's own attribution functions on the same inputs (those
are pinned against independent oracles in their own tests) and, for saliency and
gradient x input, with this file's own `tf.GradientTape` on the logits.
`saved_model_cli show --all` lists the signatures as TF Serving reads them.
"""

import json
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from _subprocess import run_json

import keras_attreg as kar
from keras_attreg import attributions

CLASSES = 3
IMAGE_OPTIONS = {
    "saliency": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4, "noise": 0.2, "seed": 3},
    "epsilon_lrp": {"epsilon": 0.05},
    "deeplift_rescale": {"baseline": 0.1},
    "occlusion": {"patch_size": 4},
}
TEXT_OPTIONS = {
    "saliency": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 6},
    "smoothgrad": {"samples": 3},
    "epsilon_lrp": {},
}
WRAPPER_OPTIONS = {"saliency": {}, "epsilon_lrp": {}}
BATCHES = (3, 5)

# Run in a fresh process: loads each SavedModel, calls every signature by name
# on the saved inputs, writes the outputs to an .npz, prints a JSON summary.
_SERVE = r"""
import json, sys, numpy as np, tensorflow as tf
cases = json.loads(open(root + "/cases.json").read())
outputs, summary = {}, {}
for model, key in cases["keys"].items():
    loaded = tf.saved_model.load(f"{root}/{model}")
    signatures = loaded.signatures
    data = np.load(f"{root}/{model}_inputs.npz")
    summary[model] = {"signatures": sorted(signatures), "errors": {}}
    for name, function in signatures.items():
        for size in cases["batches"]:
            x = tf.constant(data[f"x{size}"])
            if name.endswith("_target"):
                result = function(**{key: x, "target": tf.constant(data[f"t{size}"])})
            else:
                result = function(**{key: x})
            for out, value in result.items():
                outputs[f"{model}/{name}/{size}/{out}"] = value.numpy()
    wrong = tf.constant(data["wrong"])
    for label, call in [
        ("dtype", lambda: signatures["saliency"](**{key: wrong})),
        ("target", lambda: signatures["saliency_target"](
            **{key: tf.constant(data["x3"]), "target": tf.constant([0, 7, 1])})),
    ]:
        try:
            call()
            summary[model]["errors"][label] = None
        except Exception as error:
            summary[model]["errors"][label] = f"{type(error).__name__}: {error}"
    if "nan" in data:
        try:
            signatures["saliency"](**{key: tf.constant(data["nan"])})
            summary[model]["errors"]["nan"] = None
        except Exception as error:
            summary[model]["errors"]["nan"] = f"{type(error).__name__}: {error}"
np.savez(root + "/outputs.npz", **outputs)
summary["modules"] = sorted(m for m in sys.modules if m.startswith("keras_attreg"))
print(json.dumps(summary))
"""


def _cnn() -> keras.Model:
    """Conv -> BatchNorm (moving statistics far from 0 and 1) -> ReLU -> logits
    -> softmax, on 8x8x2 images named "image"."""
    inputs = keras.Input((8, 8, 2), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    norm = keras.layers.BatchNormalization()
    h = keras.layers.ReLU()(norm(h))
    h = keras.layers.Flatten()(h)
    logits = keras.layers.Dense(CLASSES, name="logits")(h)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    norm.moving_mean.assign(np.linspace(-0.5, 0.5, 4))
    norm.moving_variance.assign(np.linspace(0.3, 2.0, 4))
    return model


def _text() -> keras.Model:
    """Token ids (named "tokens", 0 = padding) -> Embedding -> LSTM -> logits."""
    ids = keras.Input((7,), dtype="int32", name="tokens")
    e = keras.layers.Embedding(30, 4, mask_zero=True)(ids)
    h = keras.layers.LSTM(5)(e)
    return keras.Model(ids, keras.layers.Dense(CLASSES)(h))


def _wrapper() -> kar.AttributionRegularizedModel:
    """A wrapper explained at `logits_layer`, trained one step: it serves the
    base model's softmax and explains the logits."""
    inputs = keras.Input((6,), name="features")
    h = keras.layers.Dense(8, activation="relu")(inputs)
    logits = keras.layers.Dense(CLASSES, name="logits")(h)
    base = keras.Model(inputs, keras.layers.Softmax()(logits))
    model = kar.AttributionRegularizedModel(
        base, kar.L1GradientPenalty(alpha=1e-2), logits_layer="logits"
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    model.fit(
        rng.normal(size=(16, 6)).astype("float32"),
        rng.integers(0, CLASSES, 16),
        verbose=0,
    )
    return model


def _inputs(kind: str, rng) -> dict:
    if kind == "text":
        data = {}
        for size in BATCHES:
            ids = rng.integers(1, 30, (size, 7)).astype("int32")
            ids[:, 4:][rng.random((size, 3)) < 0.6] = 0  # some padding at the end
            data[f"x{size}"] = ids
        data["wrong"] = data["x3"].astype("int64")
    else:
        shape = (8, 8, 2) if kind == "cnn" else (6,)
        data = {
            f"x{size}": rng.normal(size=(size, *shape)).astype("float32")
            for size in BATCHES
        }
        data["wrong"] = data["x3"].astype("float64")
        data["nan"] = data["x3"].copy()
        data["nan"].reshape(3, -1)[1, 0] = np.nan
    return data


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Exports the three models, runs every signature in a fresh process."""
    root = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    models = {"cnn": _cnn(), "text": _text(), "wrapper": _wrapper()}
    kar.export_with_explanations(
        models["cnn"], root / "cnn", IMAGE_OPTIONS, verbose=False
    )
    kar.export_with_explanations(
        models["text"], str(root / "text"), TEXT_OPTIONS, verbose=False
    )
    models["wrapper"].export(
        str(root / "wrapper"), explanations=list(WRAPPER_OPTIONS), verbose=False
    )
    inputs = {kind: _inputs(kind, rng) for kind in models}
    for kind, data in inputs.items():
        for size in BATCHES:  # a target other than the predicted class
            predicted = models[kind](data[f"x{size}"]).numpy().argmax(-1)
            data[f"t{size}"] = ((predicted + 1) % CLASSES).astype("int32")
        np.savez(root / f"{kind}_inputs.npz", **data)
    keys = {"cnn": "image", "text": "tokens", "wrapper": "features"}
    (root / "cases.json").write_text(json.dumps({"keys": keys, "batches": BATCHES}))
    summary = run_json(f"root = {str(root)!r}\n" + _SERVE, timeout=600)
    with np.load(root / "outputs.npz") as archive:
        outputs = dict(archive)
    return {
        "root": root,
        "models": models,
        "inputs": inputs,
        "summary": summary,
        "outputs": outputs,
    }


def _library(model, name, x, targets, options):
    """The package's own map, SmoothGrad over the request as one batch."""
    if name == "smoothgrad":
        options = dict(options, batch_size=options["samples"] * len(x))
    return attributions.get(name)(model, x, targets, **options).numpy()


def _tape_gradient(model, x, targets):
    """d logit_c / dx by this test's own tape on the layer named "logits"."""
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.gather(logits(x, training=False), targets, batch_dims=1)
    return tape.gradient(scores, x).numpy()


@pytest.mark.slow  # the shared export-and-serve fixture takes ~30 s
def test_the_signatures_run_without_the_package(served):
    """The fresh process never imported keras_attreg, and each SavedModel has
    `serve`, `serving_default` and `M`, `M_target` for each method asked."""
    summary = served["summary"]
    assert summary["modules"] == []
    for kind, options in [
        ("cnn", IMAGE_OPTIONS),
        ("text", TEXT_OPTIONS),
        ("wrapper", WRAPPER_OPTIONS),
    ]:
        expected = {"serve", "serving_default"}
        expected |= {
            f"{name}{suffix}" for name in options for suffix in ("", "_target")
        }
        assert set(summary[kind]["signatures"]) == expected


@pytest.mark.slow  # the shared export-and-serve fixture takes ~30 s
@pytest.mark.parametrize("kind", ["cnn", "text"])
def test_served_maps_are_the_library_maps(served, kind):
    """Every method, with and without a target, at two batch sizes: prediction
    = the model's own output, target = its argmax (or the target sent), map =
    the package's function on the same inputs and classes (oracle: the package,
    run here in eager mode, SmoothGrad's noise over the request as one batch)."""
    model = served["models"][kind]
    options = IMAGE_OPTIONS if kind == "cnn" else TEXT_OPTIONS
    outputs = served["outputs"]
    for size in BATCHES:
        x = served["inputs"][kind][f"x{size}"]
        prediction = model(x, training=False).numpy()
        predicted = prediction.argmax(axis=-1)
        sent = served["inputs"][kind][f"t{size}"]
        assert (sent != predicted).all()  # the target input must matter
        for name, option in options.items():
            for suffix, targets in [("", predicted), ("_target", sent)]:
                out = f"{kind}/{name}{suffix}/{size}"
                np.testing.assert_allclose(
                    outputs[f"{out}/prediction"], prediction, rtol=1e-5, atol=1e-6
                )
                np.testing.assert_array_equal(outputs[f"{out}/target"], targets)
                expected = _library(model, name, x, targets, option)
                assert outputs[f"{out}/attribution"].shape == (
                    x.shape if kind == "cnn" else (size, 7)
                )
                np.testing.assert_allclose(
                    outputs[f"{out}/attribution"], expected, rtol=1e-4, atol=1e-6
                )
        np.testing.assert_allclose(
            outputs[f"{kind}/serving_default/{size}/output_0"],
            prediction,
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.slow  # the shared export-and-serve fixture takes ~30 s
def test_served_token_maps_are_zero_at_padding(served):
    """Token models give one value per token, 0 where the id is 0 (padding)
    and not 0 elsewhere (oracle: the ids sent)."""
    for size in BATCHES:
        ids = served["inputs"]["text"][f"x{size}"]
        assert (ids == 0).any()
        for name in TEXT_OPTIONS:
            maps = served["outputs"][f"text/{name}/{size}/attribution"]
            assert maps.shape == ids.shape
            np.testing.assert_array_equal(maps[ids == 0], 0.0)
            assert np.all(maps[ids != 0] != 0.0)


@pytest.mark.slow  # the shared export-and-serve fixture takes ~30 s
def test_served_gradient_maps_match_this_tape(served):
    """Saliency = |d logit_c/dx| and gradient x input = x * d logit_c/dx, the
    gradient from this test's own tape on the logits layer in inference mode
    (BatchNorm on its moving statistics), at both batch sizes."""
    model = served["models"]["cnn"]
    for size in BATCHES:
        x = served["inputs"]["cnn"][f"x{size}"]
        for suffix, targets in [
            ("", model(x, training=False).numpy().argmax(-1)),
            ("_target", served["inputs"]["cnn"][f"t{size}"]),
        ]:
            gradient = _tape_gradient(model, x, targets)
            outputs = served["outputs"]
            np.testing.assert_allclose(
                outputs[f"cnn/saliency{suffix}/{size}/attribution"],
                np.abs(gradient),
                rtol=1e-4,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                outputs[f"cnn/gradient_x_input{suffix}/{size}/attribution"],
                x * gradient,
                rtol=1e-4,
                atol=1e-6,
            )


@pytest.mark.slow  # the shared export-and-serve fixture takes ~30 s
def test_wrapper_export_serves_the_base_model_and_explains_its_logits(served):
    """`AttributionRegularizedModel.export(explanations=...)`: the prediction
    is the base model's softmax (rows sum to 1), the maps those of the wrapper
    (its logits layer; oracles: the package's functions on the wrapper, this
    test's tape for saliency), and no regulariser state is saved."""
    model = served["models"]["wrapper"]
    outputs = served["outputs"]
    for size in BATCHES:
        x = served["inputs"]["wrapper"][f"x{size}"]
        prediction = model.base_model(x, training=False).numpy()
        predicted = prediction.argmax(axis=-1)
        for name in WRAPPER_OPTIONS:
            out = f"wrapper/{name}/{size}"
            np.testing.assert_allclose(
                outputs[f"{out}/prediction"], prediction, rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                outputs[f"{out}/prediction"].sum(-1), 1.0, rtol=1e-6
            )
            np.testing.assert_allclose(
                outputs[f"{out}/attribution"],
                _library(model, name, x, predicted, {}),
                rtol=1e-4,
                atol=1e-6,
            )
        np.testing.assert_allclose(
            outputs[f"wrapper/saliency/{size}/attribution"],
            np.abs(_tape_gradient(model.base_model, x, predicted)),
            rtol=1e-4,
            atol=1e-6,
        )
    variables = tf.saved_model.load(str(served["root"] / "wrapper")).variables
    assert variables and not any("regularizer" in v.name for v in variables)


@pytest.mark.slow  # the shared export-and-serve fixture takes ~30 s
def test_bad_requests_fail_with_clear_errors(served):
    """A request of the wrong dtype names both dtypes; a target out of range
    names the valid range; a NaN image is refused (the eager boundary's check,
    as a run-time assertion)."""
    errors = {kind: served["summary"][kind]["errors"] for kind in served["models"]}
    assert "float" in errors["cnn"]["dtype"] and "double" in errors["cnn"]["dtype"]
    assert "int32" in errors["text"]["dtype"] and "int64" in errors["text"]["dtype"]
    for kind in served["models"]:
        assert f"expected class indices in [0, {CLASSES})" in errors[kind]["target"]
    for kind in ("cnn", "wrapper"):
        assert "expected finite inputs" in errors[kind]["nan"]


def _cli(folder) -> str:
    command = pathlib.Path(sys.executable).parent / "saved_model_cli"
    return subprocess.run(
        [str(command), "show", "--dir", str(folder), "--all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout


def _signature_inputs(listing: str, name: str) -> dict[str, tuple[str, str]]:
    """{input name: (dtype, shape)} of signature `name` in a `show --all` listing."""
    block = listing.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
    inputs = block.split("contains the following output(s)")[0]
    return {
        key: (dtype, shape)
        for key, dtype, shape in re.findall(
            r"inputs\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([-\d, ]*\))",
            inputs,
        )
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, key, dtype, shape",
    [
        ("cnn", "image", "DT_FLOAT", "(-1, 8, 8, 2)"),
        ("text", "tokens", "DT_INT32", "(-1, 7)"),
    ],
)
def test_saved_model_cli_lists_the_signatures(served, kind, key, dtype, shape):
    """`saved_model_cli show --all` (what TF Serving reads): each method's two
    signatures, the input under the model input's name with its dtype and a
    free batch size (-1), `target` as int32 (-1), and the three outputs."""
    listing = _cli(served["root"] / kind)
    for name in IMAGE_OPTIONS if kind == "cnn" else TEXT_OPTIONS:
        assert _signature_inputs(listing, name) == {key: (dtype, shape)}
        assert _signature_inputs(listing, f"{name}_target") == {
            key: (dtype, shape),
            "target": ("DT_INT32", "(-1)"),
        }
        block = listing.split(f"signature_def['{name}']:")[1].split("Method name")[0]
        assert set(re.findall(r"outputs\['(\w+)'\]", block)) == {
            "attribution",
            "prediction",
            "target",
        }
    assert _signature_inputs(listing, "serving_default") == {key: (dtype, shape)}


def test_bad_export_arguments_raise_before_writing(tmp_path):
    """Unknown methods or options, bad option values (each method's own check),
    an empty list, a two-input model and a non-SavedModel format with
    explanations: a ValueError naming the argument and the value; no folder."""
    model = _cnn()
    path = tmp_path / "served"
    cases = [
        (["saliency", "lime"], r"argument methods.*'lime'"),
        ([], r"argument methods.*Received: methods=\[\]"),
        ({"integrated_gradients": {"steps": 0}}, r"argument steps.*Received: steps=0"),
        ({"smoothgrad": {"samples": -2}}, r"argument samples.*samples=-2"),
        ({"epsilon_lrp": {"epsilon": 0.0}}, r"argument epsilon.*epsilon=0.0"),
        ({"saliency": {"stepz": 3}}, r"argument methods.*'saliency'.*stepz"),
    ]
    for methods, message in cases:
        with pytest.raises(ValueError, match=message):
            kar.export_with_explanations(model, path, methods, verbose=False)
        assert not path.exists()
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match="argument model.*one input"):
        kar.export_with_explanations(two, path, ["saliency"], verbose=False)
    wrapper = kar.AttributionRegularizedModel(model, kar.L1GradientPenalty())
    with pytest.raises(ValueError, match="argument explanations.*format='onnx'"):
        wrapper.export(path, format="onnx", explanations=["saliency"])
    assert not path.exists()
