"""The model zoo: architectures match their published sizes, small versions run."""

import pytest
import torch

from torch_tier import zoo

# A small version of every entry: same architecture, seconds to build and run.
SMALL = {
    "wide_resnet101_2": dict(image_size=32, width=0.25, depth=0.34),
    "resnet50": dict(batch=2, image_size=32, width=0.25, depth=0.34),
    "bert-base": dict(batch=2, seq_len=16, width=0.25, depth=0.17),
    "gpt2": dict(batch=2, seq_len=16, width=0.25, depth=0.17),
    "llama": dict(batch=2, seq_len=16, width=0.25, depth=0.17),
    "dlrm": dict(batch=4, rows=1e-3, lookups=3),
    "qwen2": dict(batch=2, seq_len=16, width=0.25, depth=0.09),
    "mistral": dict(batch=2, seq_len=16, width=0.125, depth=0.07),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, count", [("wide_resnet101_2", 126_886_696), ("resnet50", 25_557_032)]
)
def test_resnets_match_torchvision_parameter_counts(name, count):
    assert n_params(zoo.build(name).model) == count


def test_small_sizes_cover_the_zoo():
    assert set(SMALL) == set(zoo.names())


@pytest.mark.parametrize("name", list(SMALL))
def test_small_version_runs_a_forward(name):
    w = zoo.build(name, **SMALL[name])
    assert w.name == name and w.description
    assert not w.model.training
    assert isinstance(w.inputs, tuple) and all(isinstance(t, torch.Tensor) for t in w.inputs)
    with torch.no_grad():
        out = w.model(*w.inputs)
    out = out if isinstance(out, torch.Tensor) else out[0]
    assert out.shape[0] == w.inputs[0].shape[0]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, count", [("qwen2", 494_032_768), ("mistral", 7_241_732_096)])
def test_decoders_match_their_published_parameter_counts(name, count):
    with torch.device("meta"):  # Mistral-7B would need 29 GB in float32
        model, _ = zoo._ZOO[name]()
    assert n_params(model) == count


def test_a_transformers_directory_builds_its_causal_lm(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1).save_pretrained(tmp_path)
    w = zoo.resolve(str(tmp_path), seq_len=8)
    assert type(w.model).__name__ == "Qwen2ForCausalLM" and w.inputs[0].shape == (1, 8)
    assert "causal LM" in w.description
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(ValueError, match="config.json"):
        zoo.resolve(str(tmp_path))


@pytest.mark.parametrize("name", ["bert-base", "gpt2", "llama", "qwen2", "mistral"])
def test_transformers_take_token_ids(name):
    (ids,) = zoo.build(name, **SMALL[name]).inputs
    assert ids.dtype == torch.long and ids.shape == (2, 16)


def test_dlrm_reads_its_tables_sparsely():
    w = zoo.build("dlrm", **SMALL["dlrm"])
    dense, sparse = w.inputs
    tables = w.model.embeddings
    assert all(isinstance(t, torch.nn.EmbeddingBag) for t in tables)
    assert sparse.shape == (len(tables), 4, 3)
    assert all(int(idx.max()) < t.num_embeddings for t, idx in zip(tables, sparse))


def test_build_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = (zoo.build("resnet50", **SMALL["resnet50"]) for _ in range(2))
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(a.inputs[0], b.inputs[0])
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))


def test_sequence_longer_than_the_model_is_refused():
    with pytest.raises(ValueError, match="seq_len"):
        zoo.build("bert-base", seq_len=1000, width=0.25, depth=0.1)


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ValueError, match="resnet50"):
        zoo.build("resnet18")


def test_resolve_zoo_name_and_dotted_paths(tmp_path, monkeypatch):
    assert zoo.resolve("dlrm", **SMALL["dlrm"]).name == "dlrm"
    w = zoo.resolve("torch_tier.zoo:resnet50", **SMALL["resnet50"])
    assert w.inputs[0].shape == (2, 3, 32, 32)

    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def tiny(batch=3):\n"
        '    """A one-layer model."""\n'
        "    return torch.nn.Linear(4, 2).train(), torch.randn(batch, 4)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    w = zoo.resolve("my_models.tiny", batch=5)
    assert w.description == "A one-layer model."
    assert not w.model.training  # put in eval mode
    assert w.inputs[0].shape == (5, 4)  # a bare tensor becomes a 1-tuple


@pytest.mark.parametrize(
    "spec", ["resnet", "no_such_module:fn", "torch_tier.zoo:no_such_fn", "torch_tier.zoo:CRITEO_KAGGLE_ROWS"]
)
def test_resolve_bad_spec_names_it(spec):
    with pytest.raises(ValueError, match=spec):
        zoo.resolve(spec)


def test_resolve_rejects_a_function_not_returning_model_and_inputs(tmp_path, monkeypatch):
    (tmp_path / "bad_models.py").write_text("def model():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="bad_models:model"):
        zoo.resolve("bad_models:model")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL))
def test_full_size_forward(name):
    w = zoo.build(name)
    with torch.no_grad():
        out = w.model(*w.inputs)
    out = out if isinstance(out, torch.Tensor) else out[0]
    assert torch.isfinite(out).all()
