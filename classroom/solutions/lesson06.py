# Reference solutions for notebooks/06_training_a_tiny_clip.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_training_step
def training_step(model, optimizer, images, tokens):
    image_features, text_features, tau = model(images, tokens)    # (B, D), (B, D), ()
    batch_loss = loss.clip_loss(image_features, text_features, tau)
    optimizer.zero_grad()
    batch_loss.backward()
    optimizer.step()
    model.temperature.clamp_()                                   # τ back into [0.01, 1]
    return batch_loss.item()

answer = training_step
