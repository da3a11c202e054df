import pytest
import torch

from torch_tier import runtime


@pytest.fixture(autouse=True)
def _no_leaked_session():
    """Every test starts and ends with torch-tier disabled."""
    yield
    if runtime._active is not None:
        runtime._active.close()
        pytest.fail("test left a torch-tier session open")


def small_cnn() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    ).eval()
    return model, torch.randn(2, 3, 32, 32)


def small_bert() -> tuple[torch.nn.Module, torch.Tensor]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, attn_implementation="eager")
    model = BertModel(config).eval()
    return model, torch.randint(0, 500, (2, 16))


@pytest.fixture
def one_thread():
    """One intra-op thread for timing tests: on a shared 2-core machine, steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cnn():
    return small_cnn()


@pytest.fixture
def bert():
    return small_bert()


@pytest.fixture
def registered():
    """Device models registered by a test are forgotten after it."""
    from torch_tier import devices

    before = dict(devices._registered)
    yield
    devices._registered.clear()
    devices._registered.update(before)
