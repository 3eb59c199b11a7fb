# Reference solutions for notebooks/04_the_contrastive_loss.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_clip_loss
def my_clip_loss(image_features, text_features, temperature):
    logits_per_image = image_features @ text_features.T / temperature    # (B, B): image i against every caption
    logits_per_text = logits_per_image.T                                 # (B, B): caption j against every image
    labels = torch.arange(len(image_features), device=image_features.device)  # the match of row i is column i
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
