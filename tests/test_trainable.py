"""Training an AlexNet-family network through the engine's fused ops: forward and gradients
against the plain-PyTorch reference's."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnxfer import nets
from cnnxfer.nets import trainable


@pytest.mark.parametrize("name,size", [("alexnet", 67), ("caffenet", 99), ("torchvision", 64)])
def test_engine_gradients_match_the_reference(name, size):
    net = nets.alexnet(name, width=0.125, input_size=size, num_classes=5, seed=0).double()
    x = torch.randn(3, 3, size, size, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(1)) * 3
    y = torch.tensor([0, 3, 4])
    grads = {}
    for backend in ("engine", "reference"):
        net.zero_grad(set_to_none=True)
        logits = trainable.forward(net, x, training=False, backend=backend)
        F.cross_entropy(logits, y).backward()
        grads[backend] = {k: p.grad.clone() for k, p in net.named_parameters()}
        if backend == "engine":
            engine_logits = logits.detach()
        else:
            torch.testing.assert_close(engine_logits, logits.detach(), rtol=1e-10, atol=1e-12)
    for key, grad in grads["reference"].items():
        torch.testing.assert_close(grads["engine"][key], grad, rtol=1e-8, atol=1e-12, msg=key)
        assert grad.abs().sum() > 0, key  # every layer gets a gradient


def test_float32_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    net = trainable.initialize(nets.alexnet("alexnet", width=0.125, input_size=67,
                                            num_classes=4), seed=0)
    x, y = torch.randn(16, 3, 67, 67), torch.arange(16) % 4
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(trainable.forward(net, x, training=True), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    # the frozen extractor sees the trained weights (its caches follow the parameters)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "fc7"), trainable.forward(net, x, layer="fc7",
                                                                    training=False),
                                   rtol=1e-4, atol=1e-4)


def test_dropout_only_while_training_and_errors():
    net = nets.alexnet("alexnet", width=0.125, input_size=67, num_classes=4, seed=0)
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        a = trainable.forward(net, x, training=False)
        torch.testing.assert_close(a, trainable.forward(net, x, training=False))
        torch.manual_seed(0)
        b = trainable.forward(net, x, training=True)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="backend must be"):
        trainable.forward(net, x, backend="fast")
    with pytest.raises(ValueError, match=r"x must be a \[N, 3, H, W\]"):
        trainable.forward(net, x[:, :2])
    with pytest.raises(ValueError, match="layer must be one of"):
        trainable.forward(net, x, layer="fc9")
