# Reference solutions for notebooks/03_encoders.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_eot_positions
exercise_tokens = tok(["a red circle", "there is a large blue ring", "a cyan cross left of a white square",
                       "a small green diamond at the bottom"])
print(exercise_tokens)

# argmax(dim=-1) alone finds the largest token id, which need not be <eot> (id 2); compare with the id
# first, then take the first (and only) position where the row matches
answer = (exercise_tokens == tok.eot_id).int().argmax(dim=-1)   # (4,)
