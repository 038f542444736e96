"""lambda-returns over an imagined trajectory (IRIS section 2.3; Sutton & Barto section 12.1).

With rewards ``r_t``, episode ends ``d_t`` (after the action of step ``t``) and values ``V_t`` of the
observations ``t = 0 .. H`` (``V_H`` bootstraps the horizon):

    R_t = r_t + gamma (1 - d_t) [(1 - lambda) V_{t+1} + lambda R_{t+1}],   R_H = V_H.
"""

from __future__ import annotations

import torch


def lambda_returns(
    rewards: torch.Tensor, values: torch.Tensor, ends: torch.Tensor, gamma: float, lambda_: float
) -> torch.Tensor:
    """``rewards, ends (B, H)`` and ``values (B, H + 1)`` -> lambda-returns ``(B, H)``.

    The recursion runs backwards over the H steps; every operation stays on the device.
    """
    B, H = rewards.shape
    if values.shape != (B, H + 1) or ends.shape != (B, H):
        raise ValueError(
            f"Expected rewards and ends of shape (B, H) and values of shape (B, H + 1); got "
            f"{tuple(rewards.shape)}, {tuple(ends.shape)} and {tuple(values.shape)}."
        )
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lambda_ <= 1.0):
        raise ValueError(f"gamma and lambda must lie in [0, 1]; got {gamma} and {lambda_}.")
    continues = gamma * (1.0 - ends.to(values.dtype))
    returns = torch.empty_like(rewards, dtype=values.dtype)
    following = values[:, H]
    for t in reversed(range(H)):
        following = rewards[:, t] + continues[:, t] * ((1.0 - lambda_) * values[:, t + 1] + lambda_ * following)
        returns[:, t] = following
    return returns
