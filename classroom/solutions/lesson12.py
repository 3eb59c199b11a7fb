# Reference solutions for notebooks/12_tau_and_the_shape_of_the_space.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_modality_gap
ex_img, ex_txt = exercises.lesson12.exercise_features()      # (12, 8) each, unit length
answer = (ex_img.mean(dim=0) - ex_txt.mean(dim=0)).norm().item()   # the centroids (8,) each, then one distance

# %% check_hardest_negative
def hardest_negative(sims):
    positives = torch.eye(len(sims), dtype=torch.bool)                  # (B, B) True on the diagonal
    return sims.masked_fill(positives, float("-inf")).argmax(dim=1)     # (B,) -inf: a positive never wins
answer = hardest_negative
