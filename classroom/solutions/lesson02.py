# Reference solutions for notebooks/02_the_data.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_heldout_combos
train_set = data.ShapesWorld.generate(5000, seed=0)

scenes = train_set.scenes                                   # (5000, 2, 5): two object slots per image
present = scenes[..., data.PRESENT] == 1                    # (5000, 2): which slots hold an object
combos = data.combo_index(scenes[..., data.COLOR], scenes[..., data.SHAPE])[present]   # one id per object
per_combo = torch.bincount(combos, minlength=data.NUM_COMBOS)  # (48,): how many objects of each combination
answer = torch.nonzero(per_combo == 0).flatten().tolist()      # the ids no object in train_set has

# %% check_caption
exercise_scene = torch.tensor([[4, 2, 0, 2, 1],      # [colour, shape, size, position, present]
                               [0, 0, 0, 0, 0]])     # no second object

# colour 4 = data.COLOR_NAMES[4], shape 2 = data.SHAPES[2], size 0 = data.SIZES[0],
# position 2 = data.POSITIONS[2], which data.WHERE says as 'at the top'
answer = "a small purple triangle at the top"
