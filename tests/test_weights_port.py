"""Weight files: torch .pth -> jaxviz -> .safetensors -> a process without torch, and
every way a weight file can be wrong.

Logits are compared with the float32 bound of conftest.py (1e-5 of the largest logit).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import F32_TOL, eager_host_copies, max_rel_err, nhwc, photo_and_noise, torchvision_model

torch = pytest.importorskip("torch")
import weights_port  # noqa: E402
from weights_port import __main__ as port_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (96, 112)


def torch_logits(tmodel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return nhwc(tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())))


@pytest.fixture(scope="module")
def alexnet_pth(tmp_path_factory):
    """A seeded random torchvision AlexNet, its state_dict saved with torch.save."""
    tmodel = torchvision_model("alexnet", seed=3)
    path = tmp_path_factory.mktemp("pth") / "alexnet_random.pth"
    torch.save(tmodel.state_dict(), path)
    return tmodel, path


def run_without_torch(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter where importing torch or torchvision fails."""
    blocker = textwrap.dedent("""
        import sys
        for name in ("torch", "torchvision"):
            sys.modules[name] = None  # `import torch` now raises ImportError
    """)
    script = tmp_path / "no_torch.py"
    script.write_text(blocker + textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=600)


# --- acceptance 3: .pth -> jv.load -> .safetensors -> no torch ------------------------------


@pytest.mark.parametrize("arch", ["alexnet", "googlenet"])
def test_pth_and_safetensors_give_torch_logits_without_torch(arch, tmp_path, alexnet_pth):
    if arch == "alexnet":
        tmodel, pth = alexnet_pth
        flags = []
    else:  # BatchNorm statistics, aux heads in the file, transform_input from the command line
        tmodel = torchvision_model("googlenet", seed=4, aux_logits=True, transform_input=True)
        pth = tmp_path / "googlenet_random.pth"
        torch.save(tmodel.state_dict(), pth)
        flags = ["--transform-input"]
    x = photo_and_noise(SIZE)
    want = torch_logits(tmodel, x)

    config = {"transform_input": True} if arch == "googlenet" else {}
    model, variables = jv.load(arch, weights=pth, **config)
    assert max_rel_err(jax.jit(model.apply)(variables, jnp.asarray(x)), want) <= F32_TOL

    out = tmp_path / f"{arch}.safetensors"
    assert port_cli.main([arch, "--weights", str(pth), "-o", str(out), *flags]) == 0
    np.save(tmp_path / "x.npy", x)
    result = run_without_torch(f"""
        import jax
        import numpy as np
        import jaxviz as jv
        model, variables = jv.load({arch!r}, weights={str(out)!r})
        np.save({str(tmp_path / "logits.npy")!r}, np.asarray(jax.jit(model.apply)(variables, np.load({str(tmp_path / "x.npy")!r}))))
        assert "torch" not in {{m.split(".")[0] for m, v in sys.modules.items() if v is not None}}
        print(type(model).__name__, getattr(model, "transform_input", None))
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_rel_err(np.load(tmp_path / "logits.npy"), want) <= F32_TOL
    expected_name = "AlexNet None" if arch == "alexnet" else "GoogLeNet True"
    assert result.stdout.split() == expected_name.split(), result.stdout


def test_torch_is_really_blocked_in_the_subprocess(tmp_path):
    result = run_without_torch("import torch\n", tmp_path)
    assert result.returncode != 0 and "import of torch halted" in result.stderr


def test_weights_port_without_torch_says_how_to_install(tmp_path):
    result = run_without_torch("""
        import jaxviz as jv
        try:
            jv.load("alexnet", weights="DEFAULT")
        except ImportError as e:
            print(e)
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "jaxviz[torch]" in result.stdout


def test_safetensors_roundtrip_is_exact_and_keeps_configuration(tmp_path):
    model, variables = weights_port.from_torchvision(
        torchvision_model("vgg11_bn", num_classes=10, dropout=0.25))
    path = weights_port.save_weights(variables, tmp_path / "v.safetensors", model=model)
    loaded, metadata = weights_port.load_weights(path)
    assert metadata["architecture"] == "vgg11_bn"
    config = json.loads(metadata["config"])
    assert (config["num_classes"], config["dropout"], config["batch_norm"]) == (10, 0.25, True)
    flat_a = jv.models.weights.flatten_variables(variables)
    flat_b = jv.models.weights.flatten_variables(loaded)
    assert flat_a.keys() == flat_b.keys()
    assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)
    model2, _ = jv.load("vgg11_bn", weights=path)
    assert model2 == model
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_port_copies_torch_memory_without_compiling():
    """The port owns its arrays (changing torch's weights in place afterwards changes
    nothing) and copies them with ``jax.device_put``, not ``jnp.asarray``, which compiles
    an identity program per shape in jax 0.10 (``jaxviz/_host.py``)."""
    tmodel = torchvision_model("alexnet", seed=5)
    with eager_host_copies(jv, weights_port) as found:
        _, variables = weights_port.from_torchvision(tmodel)
    assert found == [], f"jnp.asarray of host arrays at {found}"
    first = variables["params"]["features"]["0"]  # the bias is torch's layout as it is
    before = {k: np.array(v) for k, v in first.items()}
    with torch.no_grad():
        tmodel.features[0].weight.add_(1.0)
        tmodel.features[0].bias.add_(1.0)
    for k, v in first.items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)


def test_state_dict_key_prefix_and_checkpoint_wrappers(tmp_path, alexnet_pth):
    tmodel, _ = alexnet_pth
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tmodel.state_dict().items()}}
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)
    model, variables = jv.load("alexnet", weights=path)
    x = photo_and_noise(SIZE)
    assert max_rel_err(model.apply(variables, jnp.asarray(x)), torch_logits(tmodel, x)) <= F32_TOL


# --- torchvision's DEFAULT weights, through torch.hub's real cache ----------------------------


def test_default_weights_come_from_torch_hub_cache(tmp_path, monkeypatch):
    """weights='DEFAULT' goes through torchvision's weights enum and torch.hub's cache.
    A file placed in the cache under the official name (here: seeded random weights
    with aux heads, as torchvision's file has) is used as torchvision would use it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub
    import torchvision

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    assert checkpoints.is_relative_to(tmp_path)
    checkpoints.mkdir(parents=True)
    tmodel = torchvision_model("googlenet", seed=5, aux_logits=True, transform_input=True)
    url = torchvision.models.GoogLeNet_Weights.DEFAULT.url
    torch.save(tmodel.state_dict(), checkpoints / Path(url).name)

    model, variables = jv.load("googlenet", weights="DEFAULT")
    assert model.transform_input and not model.aux_logits
    x = photo_and_noise(SIZE)
    tmodel.aux_logits, tmodel.aux1, tmodel.aux2 = False, None, None  # as torchvision does
    assert max_rel_err(jax.jit(model.apply)(variables, jnp.asarray(x)), torch_logits(tmodel, x)) <= F32_TOL
    # the downloaded file, passed by path, gets the same configuration
    model_from_file, _ = jv.load("googlenet", weights=checkpoints / Path(url).name)
    assert model_from_file == model


def test_default_weights_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub

    def offline(url, *args, **kwargs):
        raise OSError(f"network unreachable: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as info:
        jv.load("vgg16", weights="DEFAULT")
    message = str(info.value)
    for part in ("could not download", "https://download.pytorch.org/models/vgg16-397923af.pth",
                 "network unreachable", "weights='path/to/vgg16-397923af.pth'",
                 "python -m weights_port vgg16", str(tmp_path)):
        assert part in message, (part, message)
    assert not list(tmp_path.rglob("*.pth"))
    code = port_cli.main(["vgg16", "--weights", "DEFAULT", "-o", str(tmp_path / "v.safetensors")])
    assert code == 2 and not (tmp_path / "v.safetensors").exists()


# --- acceptance 4: bad weight files fail clearly and run nothing ------------------------------


def test_wrong_architecture_is_named(tmp_path, alexnet_pth):
    tmodel, pth = alexnet_pth
    with pytest.raises(jv.WeightsError) as info:
        jv.load("vgg11", weights=pth)
    message = str(info.value)
    assert "does not fit vgg11" in message and "missing" in message and "unexpected" in message
    assert "features.10.weight" in message or "features.3.weight" in message

    model, variables = weights_port.from_torchvision(tmodel)
    tagged = weights_port.save_weights(variables, tmp_path / "a.safetensors", model=model)
    with pytest.raises(jv.WeightsError, match="holds alexnet weights, not vgg16"):
        jv.load("vgg16", weights=tagged)
    untagged = weights_port.save_weights(variables, tmp_path / "b.safetensors")
    with pytest.raises(jv.WeightsError, match=r"do not fit vgg16:\n  missing \(\d+\)"):
        jv.load("vgg16", weights=untagged)


def test_wrong_shapes_are_listed(tmp_path, alexnet_pth):
    tmodel, _ = alexnet_pth
    state = dict(tmodel.state_dict())
    state["features.3.weight"] = state["features.3.weight"][:, :32]
    del state["classifier.4.bias"]
    state["features.99.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(jv.WeightsError) as info:
        jv.load("alexnet", weights=path)
    message = str(info.value)
    assert "missing (1): classifier.4.bias" in message
    assert "unexpected (1): features.99.weight" in message
    assert "features.3.weight (192, 32, 5, 5) (expected (192, 64, 5, 5))" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file(tmp_path, alexnet_pth, suffix):
    tmodel, pth = alexnet_pth
    if suffix == ".pth":
        whole = pth.read_bytes()
    else:
        model, variables = weights_port.from_torchvision(tmodel)
        whole = weights_port.save_weights(variables, tmp_path / "whole.safetensors", model=model).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(jv.WeightsError, match="truncated"):
        jv.load("alexnet", weights=cut)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ""])
def test_text_file(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("these are not weights\n")
    with pytest.raises(jv.WeightsError, match="not a readable"):
        jv.load("alexnet", weights=path)


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    evil_zip = tmp_path / "evil.pth"  # torch.save's zip format
    torch.save({"features.0.weight": torch.zeros(1), "x": _Payload(marker)}, evil_zip)
    evil_plain = tmp_path / "evil_plain.pth"  # a bare pickle
    evil_plain.write_bytes(pickle.dumps({"features.0.weight": _Payload(marker)}))
    for path in (evil_zip, evil_plain):
        with pytest.raises(jv.WeightsError, match=r"is refused: it (refers to \S+, which loading|holds objects)") as info:
            jv.load("alexnet", weights=path)
        message = str(info.value)
        assert "weights_only=True" in message and "\x1b" not in message
        assert "will likely succeed" not in message  # none of torch's advice to load it unsafely
        assert not marker.exists(), f"loading {path.name} ran its payload"
        assert port_cli.main(["alexnet", "--weights", str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
        assert not marker.exists() and not (tmp_path / "o.safetensors").exists()
    # the payload is real: a plain unpickler runs it
    pickle.loads(evil_plain.read_bytes())
    assert marker.exists()


def test_pth_without_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(jv.WeightsError, match="does not hold a state_dict"):
        jv.load("alexnet", weights=path)


def test_missing_file_and_bad_weights_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weight file"):
        jv.load("alexnet", weights=tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="unknown architecture|vgg16"):
        jv.load("vgg15")
