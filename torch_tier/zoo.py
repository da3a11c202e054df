"""Model zoo: the workloads torch-tier is developed and judged on.

Every entry is a function returning ``(model, example_inputs)``: the model in
eval mode with random weights (nothing is downloaded), and a tuple of input
tensors such that ``model(*example_inputs)`` runs one inference. Sizes are
keyword arguments whose defaults are the full published size, so tests can
build small versions of the same architecture:

- ``wide_resnet101_2``, ``resnet50``: ``batch``, ``image_size``, ``width``
  (channel factor), ``depth`` (blocks-per-stage factor);
- ``bert-base``, ``gpt2``, ``llama``, ``qwen2``, ``mistral``: ``batch``,
  ``seq_len``, ``width`` (hidden-size factor), ``depth`` (layer-count factor);
- ``dlrm``: ``batch``, ``rows`` (embedding-table row factor), ``lookups``
  (indices per bag).

The decoders (``gpt2``, ``llama``, ``qwen2``, ``mistral``, and any
``transformers`` causal-LM directory given by path) also generate:
``model.generate(*inputs, max_new_tokens=N)`` (``torch_tier.capture(...,
generate=N)``). ``GENERATION`` names the entries made for generation only:
their shipped policies are decode policies (``policies/generate/``), not
single-forward ones. At ~0.5B parameters: ``qwen2`` at its default size, and
``llama`` at ``width=1.75, depth=2`` (0.55B).

``build(name, **size)`` returns a :class:`Workload`; ``resolve(spec)`` also
accepts a user's own ``pkg.module:function`` or a directory holding a
``transformers`` ``config.json`` (what ``torch-tier profile MODEL`` takes).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

Inputs = tuple[torch.Tensor, ...]
Builder = Callable[..., tuple[nn.Module, Inputs]]


@dataclass
class Workload:
    """A model ready for inference, its example inputs and what it is."""

    name: str
    model: nn.Module
    inputs: Inputs
    description: str


def _scale(n: int, factor: float, multiple: int = 1) -> int:
    """``n * factor`` rounded to a multiple of ``multiple``, at least ``multiple``."""
    return max(multiple, round(n * factor / multiple) * multiple)


# --- ResNet family (torchvision's architecture, module names and init) -------


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck block: 1x1, 3x3 (strided), 1x1 convs."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, width: int) -> None:
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != outplanes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet over Bottleneck blocks (ResNet-50/101/152, Wide ResNets).

    ``planes`` are the four stages' base channel counts (64, 128, 256, 512 at
    full width); ``width_per_group`` is torchvision's: 64 for ResNet, 128 for
    Wide ResNet-x-2. Module names match torchvision, so its state dicts load.
    """

    def __init__(
        self,
        layers: list[int],
        planes: list[int],
        width_per_group: int = 64,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.inplanes = planes[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (blocks, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            width = p * width_per_group // 64
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(self.inplanes, p, stride if b == 0 else 1, width))
                self.inplanes = p * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(
    layers: list[int], width_per_group: int, batch: int, image_size: int, width: float, depth: float
) -> tuple[nn.Module, Inputs]:
    model = ResNet(
        [_scale(n, depth) for n in layers],
        [_scale(64 * 2**i, width) for i in range(4)],
        width_per_group,
    )
    return model.eval(), (torch.randn(batch, 3, image_size, image_size),)


def wide_resnet101_2(
    batch: int = 1, image_size: int = 224, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """Wide ResNet-101-2 (torchvision architecture), the MARL paper's workload; 126.9M params."""
    return _resnet([3, 4, 23, 3], 128, batch, image_size, width, depth)


def resnet50(
    batch: int = 1, image_size: int = 224, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """ResNet-50 (torchvision architecture), ImageNet classifier; 25.6M params."""
    return _resnet([3, 4, 6, 3], 64, batch, image_size, width, depth)


# --- transformers (configs only, never from_pretrained) ----------------------


def _token_ids(vocab_size: int, max_len: int, batch: int, seq_len: int) -> Inputs:
    """Random token ids (batch, seq_len), checked against the model's positions."""
    if seq_len > max_len:
        raise ValueError(f"seq_len {seq_len} exceeds the model's {max_len} positions")
    return (torch.randint(0, vocab_size, (batch, seq_len)),)


def _causal(model_class: type, config: Any, batch: int, seq_len: int) -> tuple[nn.Module, Inputs]:
    """A decoder of `config` in eval mode, and random token ids within its positions."""
    return model_class(config).eval(), _token_ids(config.vocab_size, config.max_position_embeddings, batch, seq_len)


def bert_base(
    batch: int = 1, seq_len: int = 128, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """BERT-base encoder with pooler (transformers BertModel); 109.5M params."""
    from transformers import BertConfig, BertModel

    hidden = 12 * _scale(64, width)
    config = BertConfig(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=_scale(12, depth)
    )
    ids = _token_ids(config.vocab_size, config.max_position_embeddings, batch, seq_len)
    return BertModel(config).eval(), ids


def gpt2(
    batch: int = 1, seq_len: int = 128, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """GPT-2 small with its tied LM head (transformers GPT2LMHeadModel); 124.4M params.

    Built with ``use_cache=False``: one forward, no KV cache kept.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=12 * _scale(64, width), n_layer=_scale(12, depth), use_cache=False)
    ids = _token_ids(config.vocab_size, config.n_positions, batch, seq_len)
    return GPT2LMHeadModel(config).eval(), ids


def llama(
    batch: int = 1, seq_len: int = 128, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """Llama-style decoder at GPT-2-small scale (transformers LlamaForCausalLM); 124.7M params.

    RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention (12 query,
    4 key/value heads), untied LM head over a 32k vocabulary; no KV cache.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=12 * _scale(64, width, 2),  # even head_dim for rotary embeddings
        intermediate_size=_scale(2048, width, 8),
        num_hidden_layers=_scale(12, depth),
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        use_cache=False,
    )
    return _causal(LlamaForCausalLM, config, batch, seq_len)


def qwen2(
    batch: int = 1, seq_len: int = 128, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """Qwen2-0.5B's architecture (transformers Qwen2ForCausalLM); 494.0M params.

    Qwen2-0.5B's config: hidden 896 (14 query heads of 64, 2 key/value heads),
    SwiGLU MLP of 4864, 24 layers, a 151,936-token vocabulary whose embedding
    the LM head shares, biases on the query/key/value projections.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=14 * _scale(64, width, 2),
        intermediate_size=_scale(4864, width, 8),
        num_hidden_layers=_scale(24, depth),
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_cache=False,
    )
    return _causal(Qwen2ForCausalLM, config, batch, seq_len)


def mistral(
    batch: int = 1, seq_len: int = 128, width: float = 1.0, depth: float = 1.0
) -> tuple[nn.Module, Inputs]:
    """Mistral-7B-v0.1's architecture (transformers MistralForCausalLM); 7241.7M params.

    Hidden 4096 (32 query heads of 128, 8 key/value heads), SwiGLU MLP of
    14336, 32 layers, 32k vocabulary, untied LM head, sliding-window attention
    over 4096 tokens. At the default size it needs 29 GB in float32: build it
    scaled (``width``, ``depth``) on a small machine.
    """
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=32000,
        hidden_size=32 * _scale(128, width, 2),
        intermediate_size=_scale(14336, width, 8),
        num_hidden_layers=_scale(32, depth),
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        sliding_window=4096,
        use_cache=False,
    )
    return _causal(MistralForCausalLM, config, batch, seq_len)


def causal_lm(path: str, batch: int = 1, seq_len: int = 128) -> tuple[nn.Module, Inputs]:
    """Any ``transformers`` causal LM from a directory's ``config.json``, with random weights.

    The architecture is what ``AutoModelForCausalLM`` builds for the config;
    no weights are read (``torch_tier.from_pretrained`` loads a checkpoint).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read a transformers config.json ({e})") from None
    try:
        model = AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise ValueError(f"{path}: {type(config).__name__} is not a causal language model ({e})") from None
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", seq_len)
    return model.eval(), _token_ids(config.vocab_size, max_len, batch, seq_len)


# --- DLRM --------------------------------------------------------------------

# Rows of the 26 categorical features of the Criteo Kaggle display-ads data
# set, as in the DLRM reference implementation's Kaggle configuration.
CRITEO_KAGGLE_ROWS = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]  # fmt: skip


def _mlp(sizes: list[int], last: nn.Module) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, ReLU after each but the last, then ``last``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers[-1] = last
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """DLRM (Naumov et al., 2019): bottom MLP on dense features, one EmbeddingBag
    per categorical feature (sum-pooled sparse lookups), pairwise dot-product
    interaction of all feature vectors, top MLP to a click probability.

    forward(dense [batch, dense_features], sparse [tables, batch, lookups] int64).
    """

    def __init__(
        self, dense_features: int, table_rows: list[int], dim: int, bottom: list[int], top: list[int]
    ) -> None:
        super().__init__()
        self.bottom = _mlp([dense_features, *bottom, dim], nn.ReLU())
        self.embeddings = nn.ModuleList(nn.EmbeddingBag(n, dim, mode="sum") for n in table_rows)
        n = len(table_rows) + 1
        self.register_buffer("pairs", torch.tril_indices(n, n, -1), persistent=False)
        self.top = _mlp([dim + n * (n - 1) // 2, *top, 1], nn.Sigmoid())

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        features = torch.stack([x] + [emb(idx) for emb, idx in zip(self.embeddings, sparse)], dim=1)
        dots = torch.bmm(features, features.transpose(1, 2))
        return self.top(torch.cat([x, dots[:, self.pairs[0], self.pairs[1]]], dim=1))


def dlrm(batch: int = 128, rows: float = 1.0, lookups: int = 1) -> tuple[nn.Module, Inputs]:
    """DLRM, Criteo Kaggle configuration: 26 embedding tables (2.2 GB) and two MLPs; 540.7M params.

    The DLRM reference implementation's Kaggle settings: 33.8M table rows of
    16 floats, bottom MLP 13-512-256-64-16, top MLP 367-512-256-1, one index
    per feature (Criteo is one-hot; raise ``lookups`` for multi-hot bags).
    """
    table_rows = [_scale(n, rows) for n in CRITEO_KAGGLE_ROWS]
    model = DLRM(13, table_rows, 16, [512, 256, 64], [512, 256])
    sparse = torch.stack([torch.randint(0, n, (batch, lookups)) for n in table_rows])
    return model.eval(), (torch.rand(batch, 13), sparse)


# --- registry ----------------------------------------------------------------

_ZOO: dict[str, Builder] = {
    "wide_resnet101_2": wide_resnet101_2,
    "resnet50": resnet50,
    "bert-base": bert_base,
    "gpt2": gpt2,
    "llama": llama,
    "dlrm": dlrm,
    "qwen2": qwen2,
    "mistral": mistral,
}
GENERATION = ("qwen2", "mistral")  # made for generation: no single-forward policies shipped


def names() -> list[str]:
    """The zoo's model names."""
    return list(_ZOO)


def build(name: str, seed: int = 0, **size: Any) -> Workload:
    """Build zoo model ``name`` at ``size`` (see the module docstring).

    Weights and inputs are drawn from torch's RNG seeded with ``seed`` inside
    a fork of its state, so the same call gives the same workload and the
    caller's RNG state is left as it was.
    """
    if name not in _ZOO:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(_ZOO)}")
    return _workload(name, _ZOO[name], seed, size)


def resolve(spec: str, seed: int = 0, **size: Any) -> Workload:
    """A zoo name, a directory holding a ``transformers`` ``config.json`` (a causal LM with
    random weights, ``causal_lm``), or a dotted path to a user's function returning
    ``(model, example_inputs)``.

    ``spec`` is ``pkg.module:function`` or ``pkg.module.function``; ``size``
    is passed to the function as keyword arguments.
    """
    if spec in _ZOO:
        return build(spec, seed, **size)
    if (Path(spec) / "config.json").is_file():
        return _workload(spec, functools.partial(causal_lm, spec), seed, size)
    return _workload(spec, _import_function(spec), seed, size)


def _import_function(spec: str) -> Builder:
    module, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    problem = (f"{spec!r} is neither a zoo model ({', '.join(_ZOO)}), a directory with a config.json, "
               f"nor a 'pkg.module:function' path")
    if not module or not attr:
        raise ValueError(problem)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{problem}: {e}") from e
    if not callable(fn):
        raise ValueError(f"{problem}: {attr!r} in {module} is not callable")
    return fn


def _workload(name: str, fn: Builder, seed: int, size: dict[str, Any]) -> Workload:
    """Call ``fn(**size)`` under ``seed`` and check it gave ``(nn.Module, tensors)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = fn(**size)
    try:
        model, inputs = result
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected (model, example_inputs), got {result!r:.80}") from None
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not isinstance(model, nn.Module) or not all(isinstance(t, torch.Tensor) for t in inputs):
        got = f"({type(model).__name__}, {', '.join(type(t).__name__ for t in inputs)})"
        raise TypeError(f"{name}: expected (nn.Module, tuple of tensors), got {got}")
    description = (getattr(fn, "func", fn).__doc__ or name).strip().splitlines()[0]  # a partial's own function
    return Workload(name, model.eval(), inputs, description)
