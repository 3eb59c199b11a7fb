# Reference solutions for notebooks/07_learnable_temperature.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_temperature_from_logit_scale
answer = math.exp(-3.0)   # logit_scale = log(1/τ), so τ = exp(-logit_scale) ≈ 0.0498

# %% check_logit_scale_bounds
answer = (math.log(1 / 1.0), math.log(1 / 0.01))   # τ = 1 gives log 1 = 0, τ = 0.01 gives log 100 ≈ 4.605
