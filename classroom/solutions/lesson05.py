# Reference solutions for notebooks/05_the_temperature_dial.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_effective_negatives
sims = exercises.lesson05.exercise_similarities()     # (8, 8), positives on the diagonal
tau_ex = exercises.lesson05.TAU_EFFECTIVE             # 0.1

log_p = F.log_softmax(sims / tau_ex, dim=1)           # (8, 8): log P_ij, each row a distribution over captions
entropy = -(log_p.exp() * log_p).sum(dim=1)           # (8,): H of each row, in nats
answer = entropy.exp()                                # (8,): e^H, the effective number of negatives

# %% check_gradient_weights
tau_ex = exercises.lesson05.TAU_GRADIENT              # 0.05

p = torch.softmax(sims[0] / tau_ex, dim=0)            # (8,): P_0j, row 0's distribution over the captions
positive = torch.zeros(8)
positive[0] = 1.0                                     # caption 0 is row 0's match
answer = (p - positive) / tau_ex                      # (8,): (P_0j - 1[j = 0]) / τ
