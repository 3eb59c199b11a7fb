# Reference solutions for notebooks/11_binding_and_hard_negatives.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_negclip_loss
def my_negclip_loss(image_features, text_features, hard_negative_features, temperature):
    B = len(image_features)
    all_text = torch.cat([text_features, hard_negative_features])           # (B + M, D): the captions first
    logits_per_image = image_features @ all_text.T / temperature           # (B, B + M)
    logits_per_text = logits_per_image[:, :B].T                             # (B, B): the true captions only
    labels = torch.arange(B, device=image_features.device)                  # caption i is column i
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2

answer = my_negclip_loss
