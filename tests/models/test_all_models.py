"""One shared test class run against every registered model (new models are tested by registering)."""

from __future__ import annotations

import pytest
import torch

from segkit.losses import create_loss
from segkit.models import create_model, list_models, model_info

MODELS = list_models()
# Models whose test size is still large (ResNet-50 cannot be shrunk): not used as their family's
# representative in the (slower) overfit test; they still run every other test.
LARGE_AT_TEST_SIZE = {"fcn-resnet50"}
# One model per family for the overfit test: the alphabetically first one that is small.
FAMILY_REPRESENTATIVES = sorted(
    {model_info(name).family: name for name in reversed(MODELS) if name not in LARGE_AT_TEST_SIZE}.values()
)
ODD_SIZE = (97, 131)


def build_tiny(name: str, num_classes: int) -> torch.nn.Module:
    """The model with its registered ``test_kwargs`` and no weight download."""
    info = model_info(name)
    kwargs = dict(info.test_kwargs)
    if info.pretrained_encoder:
        kwargs.setdefault("pretrained", False)
    return create_model(name, num_classes, **kwargs)


def outputs_of(result: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return result if isinstance(result, list) else [result]


@pytest.mark.parametrize("name", MODELS)
class TestEveryModel:
    def test_info_is_consistent(self, name: str) -> None:
        info = model_info(name)
        assert info.name == name
        assert info.family and info.paper
        assert info.output_stride is None or info.output_stride >= 1

    @pytest.mark.parametrize("num_classes", [3, 1], ids=["multiclass", "binary"])
    def test_forward_backward_at_odd_size(self, name: str, num_classes: int) -> None:
        torch.manual_seed(0)
        model = build_tiny(name, num_classes).train()
        images = torch.randn(1, 3, *ODD_SIZE)
        target = torch.randint(0, max(num_classes, 2), (1, *ODD_SIZE))
        result = model(images)
        for output in outputs_of(result):
            assert output.shape == (1, num_classes, *ODD_SIZE)
        create_loss("ce", num_classes=num_classes)(result, target).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads, "no parameter received a gradient"
        assert all(torch.isfinite(grad).all() for grad in grads)
        assert any(grad.abs().sum() > 0 for grad in grads)

    def test_eval_returns_one_tensor(self, name: str) -> None:
        model = build_tiny(name, 3).eval()
        with torch.no_grad():
            result = model(torch.randn(2, 3, 40, 50))
        assert isinstance(result, torch.Tensor)
        assert result.shape == (2, 3, 40, 50)

    def test_rebuilt_from_kwargs_loads_state_dict(self, name: str) -> None:
        torch.manual_seed(0)
        model = build_tiny(name, 2).eval()
        twin = build_tiny(name, 2).eval()
        twin.load_state_dict(model.state_dict(), strict=True)
        images = torch.randn(1, 3, 33, 47)
        with torch.no_grad():
            torch.testing.assert_close(twin(images), model(images))


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_overfits_one_batch(name: str) -> None:
    """Loss halves within 30 Adam steps on one small batch with a learnable square."""
    torch.manual_seed(0)
    model = build_tiny(name, 2).train()
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[0, 10:40, 20:50] = 1
    target[1, 30:60, 5:35] = 1
    images = torch.randn(2, 3, 64, 64) * 0.5 + target[:, None].float()
    loss_fn = create_loss("ce", num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(images), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 2, losses
