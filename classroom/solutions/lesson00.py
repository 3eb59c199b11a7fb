# Reference solutions for notebooks/00_welcome.ipynb.
#
# Each "# %% check_..." section is an exercise cell of the lesson with its solution in place; the name is
# the checker that grades it. tools/classroom.py reads this file: it shows each solution to the learner in
# a collapsed cell under the checker (insert-solutions), builds the nbgrader instructor version from it
# (source) and runs the solved lesson under strict nbval (tests/test_classroom.py). A solution may change
# only the lines of the exercise cell that hold a TODO.

# %% check_cosine_similarity
a = torch.tensor([1.0, 2.0, 2.0])
b = torch.tensor([2.0, 3.0, 6.0])

answer = (a * b).sum() / (a.norm() * b.norm())   # the dot product over both lengths: 20 / (3 * 7)
