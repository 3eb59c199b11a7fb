# Reference solutions for notebooks/09_siglip.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_siglip_loss
def my_siglip_loss(image_features, text_features, temperature, bias):
    logits = image_features @ text_features.T / temperature + bias       # (B, B): one logit per pair
    n = len(logits)
    labels = 2 * torch.eye(n, device=logits.device) - 1                  # +1 on the diagonal, -1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / n

# %% check_bias_start
answer = math.log((1 / 32) / (1 - 1 / 32))   # the log-odds of 1/32: log(1/31) ≈ -3.434
