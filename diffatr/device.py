"""Pick the torch device from a user's choice: "auto" means CUDA when present, else CPU."""

import torch

from .errors import UserError


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {choice}: no CUDA device is visible here; use cpu or auto")
    try:
        return torch.device(choice)
    except RuntimeError as e:
        raise UserError(f"--device {choice}: not a torch device ({e})") from None
