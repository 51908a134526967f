"""Published numbers of He, Zhang and Lee (ACSAC 2019, IoTJ 2020), as (PSNR dB, SSIM).

Reference data for tables that list each measured value beside the paper's; never used to
produce a measured number. Keys: (table, row, architecture, split point).
"""

from __future__ import annotations

Cell = tuple[float, float]

_SPLITS = {"mnist-net": ("conv1", "ReLU2"), "cifar10-net": ("conv11", "ReLU22", "ReLU32")}


def _row(values: list[Cell]) -> dict[tuple[str, str], Cell]:
    keys = [(arch, split) for arch, splits in _SPLITS.items() for split in splits]
    return dict(zip(keys, values, strict=True))


# ACSAC Table 3: white-box rMLE.
WHITEBOX = _row(
    [(39.69, 0.9969), (15.10, 0.5998), (37.59, 0.9960), (19.47, 0.6940), (13.38, 0.1625)]
)

# ACSAC Table 4: black-box inverse network, by the attacker's query data.
INVERSE_NETWORK = {
    "same-set": _row(
        [(39.64, 0.9887), (20.35, 0.7334), (49.88, 0.9993), (19.81, 0.6939), (15.42, 0.3124)]
    ),
    "same-distribution": _row(
        [(40.72, 0.9950), (20.81, 0.8046), (49.02, 0.9992), (19.36, 0.6802), (13.95, 0.2196)]
    ),
    "noise": _row(
        [(14.76, 0.7188), (7.72, 0.4310), (48.59, 0.9996), (12.79, 0.2930), (12.37, 0.0440)]
    ),
}

# ACSAC Table 8: black-box model reconstruction then rMLE.
MODEL_RECONSTRUCTION = _row(
    [(39.67, 0.9968), (15.41, 0.6103), (28.67, 0.9766), (18.02, 0.6893), (12.61, 0.1145)]
)

# ACSAC Table 6: query-free shadow model, (attacker data, shadow architecture).
SHADOW = {
    ("same-set", "same"): _row(
        [(17.60, 0.7423), (9.61, 0.4981), (21.16, 0.9104), (12.74, 0.1752), (11.09, 0.0419)]
    ),
    ("same-distribution", "same"): _row(
        [(21.53, 0.9121), (9.27, 0.4652), (21.45, 0.9145), (11.51, 0.1723), (11.98, 0.0102)]
    ),
    ("same-set", "different"): _row(
        [(12.59, 0.6430), (8.05, 0.3790), (17.55, 0.6344), (12.46, 0.2714), (10.68, 0.0247)]
    ),
    ("same-distribution", "different"): _row(
        [(17.86, 0.6952), (8.03, 0.3226), (13.06, 0.1553), (11.30, 0.0467), (11.47, 0.0793)]
    ),
}

# IoTJ defended runs, MNIST split at ReLU2 (white-box rMLE, 500 steps, lr 1e-2, TV 1):
# (defense, location, level) -> (accuracy, PSNR, SSIM).
DEFENSES_MNIST_RELU2: dict[tuple[str, str, float], tuple[float, float, float]] = {
    ("none", "-", 0.0): (0.9914, 10.31, 0.5105),
    ("gaussian", "features", 1.0): (0.934, 9.72, 0.485),
    ("gaussian", "features", 2.0): (0.6745, 9.03, 0.445),
    ("gaussian", "features", 5.0): (0.3163, 6.65, 0.288),
    ("laplace", "features", 0.5): (0.9739, 9.97, 0.498),
    ("laplace", "features", 1.0): (0.8444, 9.61, 0.479),
    ("dropout", "features", 0.5): (0.9782, 7.30, 0.314),
    ("dropout", "features", 0.7): (0.9391, 6.60, 0.229),
    ("dropout", "features", 0.9): (0.698, 5.97, 0.065),
    ("gaussian", "input", 0.5): (0.9797, 9.48, 0.468),
    ("gaussian", "input", 1.0): (0.8307, 8.27, 0.382),
    ("laplace", "input", 0.5): (0.9477, 8.87, 0.432),
    ("laplace", "input", 1.0): (0.6112, 7.45, 0.326),
    ("dropout", "input", 0.3): (0.9709, 8.12, 0.376),
    ("dropout", "input", 0.5): (0.8932, 7.29, 0.267),
}

# Published test accuracies of the two networks.
ACCURACY = {"mnist-net": 0.9914, "cifar10-net": 0.8719}


def published(table: str, arch: str, split: str, row: object = None) -> Cell | None:
    """Look up a published (PSNR, SSIM) cell, or None where the paper has none."""
    source: object = {
        "whitebox": WHITEBOX,
        "model-reconstruction": MODEL_RECONSTRUCTION,
        "inverse-network": INVERSE_NETWORK,
        "shadow": SHADOW,
    }.get(table)
    if isinstance(source, dict) and row is not None and table in {"inverse-network", "shadow"}:
        source = source.get(row)
    return source.get((arch, split)) if isinstance(source, dict) else None
