"""The PyTorch fully connected CRF: lattice filtering, normalisation, and sharper edges than its input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from segkit.prediction.crf import PermutohedralLattice, dense_crf

HEIGHT, WIDTH = 72, 96
PALETTE = np.array([[30, 30, 30], [200, 60, 60], [60, 180, 60], [60, 60, 220]])


def scene(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """An image with sharp colour edges, its true mask, and coarse probabilities like a stride-8 network's.

    The probabilities are the one-hot mask averaged over 8x8 cells, up-sampled
    bilinearly and blurred, so corners are rounded and a small object is weak.
    """
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    if num_classes == 2:
        mask = (np.abs(rows - 36) + np.abs(columns - 45) < 26).astype(np.int64)  # a diamond: four corners
    else:
        mask = np.zeros((HEIGHT, WIDTH), np.int64)
        mask[:, 51:] = 1
        mask[41:, :51] = 2
        mask[(rows - 20) ** 2 + (columns - 75) ** 2 < 12**2] = 3  # a small disc inside class 1
    image = np.clip(PALETTE[mask] + rng.normal(0, 6, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
    onehot = np.eye(num_classes, dtype=np.float32)[mask].transpose(2, 0, 1)
    coarse = [
        cv2.resize(cv2.resize(c, (WIDTH // 8, HEIGHT // 8), interpolation=cv2.INTER_AREA), (WIDTH, HEIGHT))
        for c in onehot
    ]
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 4) for c in coarse])
    probabilities = 0.6 * blurred + 0.4 / num_classes
    return image, mask, torch.from_numpy(probabilities / probabilities.sum(0, keepdims=True))


def near_edges(mask: np.ndarray, distance: int = 5) -> np.ndarray:
    """Pixels within ``distance`` of a class boundary."""
    edges = np.zeros(mask.shape, bool)
    edges[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edges[1:] |= mask[1:] != mask[:-1]
    return cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3) <= distance


def edge_accuracy(probabilities: torch.Tensor, mask: np.ndarray) -> float:
    band = near_edges(mask)
    return float((probabilities.argmax(0).cpu().numpy() == mask)[band].mean())


@pytest.mark.parametrize("num_classes", [2, 4])
def test_crf_sharpens_blurred_edges(num_classes: int) -> None:
    image, mask, probabilities = scene(num_classes)
    before = edge_accuracy(probabilities, mask)
    refined = dense_crf(probabilities, image)
    after = edge_accuracy(refined, mask)
    assert before < 0.95
    assert after > 0.99 and after - before > 0.03, (before, after)


def test_the_colour_kernel_does_the_sharpening() -> None:
    """Smoothness alone rounds corners further; the appearance kernel follows the image's edges."""
    image, mask, probabilities = scene(2)
    smooth_only = edge_accuracy(dense_crf(probabilities, image, bilateral_weight=0), mask)
    appearance_only = edge_accuracy(dense_crf(probabilities, image, spatial_weight=0), mask)
    assert smooth_only < edge_accuracy(probabilities, mask) < appearance_only


def test_uniform_image_keeps_a_confident_prediction() -> None:
    """Without colour edges and with a clear unary, the CRF changes no label."""
    probabilities = torch.full((3, 20, 30), 0.1)
    probabilities[1] = 0.8
    refined = dense_crf(probabilities, np.full((20, 30, 3), 128, np.uint8))
    assert (refined.argmax(0) == 1).all()


def test_output_is_a_distribution_of_the_input_shape() -> None:
    torch.manual_seed(0)
    probabilities = torch.softmax(torch.randn(5, 23, 31), dim=0)
    image = np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    refined = dense_crf(probabilities, image, iterations=3)
    assert refined.shape == (5, 23, 31) and refined.dtype == torch.float32
    assert torch.isfinite(refined).all() and (refined >= 0).all()
    torch.testing.assert_close(refined.sum(0), torch.ones(23, 31))
    torch.testing.assert_close(dense_crf(probabilities, image, iterations=0), probabilities)


def test_input_checks() -> None:
    probabilities = torch.full((2, 8, 8), 0.5)
    with pytest.raises(ValueError, match="sizes differ"):
        dense_crf(probabilities, np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\)"):
        dense_crf(probabilities, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"probabilities must be \(C, H, W\)"):
        dense_crf(probabilities[0], np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="kernel widths must be positive"):
        dense_crf(probabilities, np.zeros((8, 8, 3), np.uint8), bilateral_sigma_rgb=0)


@pytest.mark.parametrize("colour", [True, False], ids=["xy-rgb", "xy"])
def test_lattice_approximates_gaussian_filtering(colour: bool) -> None:
    """Normalised lattice filtering of image features is close to the exact Gaussian average of std 1."""
    image, _, _ = scene(4)
    rows, columns = np.mgrid[:24, :32]
    features = [columns.ravel() / 3, rows.ravel() / 3] + ([*image[:24, :32].reshape(-1, 3).T / 10] if colour else [])
    features = torch.tensor(np.stack(features, axis=1), dtype=torch.float32)
    torch.manual_seed(0)
    values = torch.rand(3, len(features))
    lattice = PermutohedralLattice(features)
    approximate = lattice.filter(values) / lattice.filter(torch.ones(1, len(features)))

    def exact(std: float) -> torch.Tensor:
        kernel = torch.exp(-(torch.cdist(features, features) ** 2) / (2 * std**2))
        return values @ kernel / kernel.sum(0)

    error = (approximate - exact(1.0)).abs().mean()
    assert error < 0.35 * (exact(1.0) - values.mean()).abs().mean()
    assert error < min((approximate - exact(std)).abs().mean() for std in (0.7, 1.4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_result_on_gpu() -> None:
    image, _, probabilities = scene(4)
    on_cpu = dense_crf(probabilities, image)
    on_gpu = dense_crf(probabilities.cuda(), image)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
